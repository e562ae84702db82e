// Command qconvert turns Hugging Face Llama checkpoints into packed low-bit
// files and writes random-weight checkpoints of real shapes.
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
		fmt.Fprintln(os.Stderr, "qconvert:", err)
		os.Exit(1)
	}
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:            "qconvert",
		Usage:           "convert Llama checkpoints to packed low-bit files; write random checkpoints",
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		UsageText:       "qconvert --in HF_DIR --out FILE --method METHOD [options]\n   qconvert COMMAND [options]",
		Flags:           convertFlags(),
		Action:          runConvert,
		Commands: []*cli.Command{
			convertCommand(),
			inspectCommand(),
			randomCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {},
	}
}

// usageError reports a command-line mistake.
func usageError(format string, args ...any) error {
	return fmt.Errorf("usage: "+format+" (see --help)", args...)
}
