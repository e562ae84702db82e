// Command qinfer loads a Llama model (a Hugging Face directory or a packed
// qllama/GGUF file) and runs it: generation, tokenization, logits, model
// information, perplexity and evaluations.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := newApp(os.Stdout, os.Stderr).RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "qinfer:", err)
		os.Exit(1)
	}
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:                 "qinfer",
		Usage:                "run Llama models (Hugging Face directories or packed files) on the CPU reference backend or a CUDA GPU",
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		Commands: []*cli.Command{
			generateCommand(),
			tokenizeCommand(),
			logitsCommand(),
			infoCommand(),
			pplCommand(),
			evalCommand(),
			benchCommand(),
			sweepCommand(),
			coqaSynthCommand(),
		},
		// Errors are printed once, by main.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}
