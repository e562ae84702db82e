// Command qreport turns a results directory written by `qinfer sweep` into a
// report: report.html (self-contained, figures embedded), report.md,
// figures/*.png and *.svg, and CSV tables.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"qllama/eval/report"
)

func main() {
	if err := newApp(os.Stdout, os.Stderr).Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "qreport:", err)
		os.Exit(1)
	}
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:      "qreport",
		Usage:     "build the study report (HTML, Markdown, PNG/SVG figures, CSV tables) from a sweep's results directory",
		UsageText: "qreport --results DIR --out REPORT_DIR [--title TEXT] [--kv-context N]",
		Writer:    stdout,
		ErrWriter: stderr,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "results", Aliases: []string{"r"}, Required: true, Usage: "results directory of `qinfer sweep` (one DIR/NAME/result.json per experiment)"},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Required: true, Usage: "report directory (created)"},
			&cli.StringFlag{Name: "title", Value: "qllama quantization study", Usage: "report title"},
			&cli.IntFlag{Name: "kv-context", Value: 2048, Usage: "context length (tokens) at which the memory figure draws the KV cache"},
		},
		HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("unexpected arguments %q (give the directories with --results and --out)", c.Args().Slice())
			}
			rep, err := report.Build(report.Options{Results: c.String("results"), Out: c.String("out"), Title: c.String("title"), KVContext: c.Int("kv-context")})
			if err != nil {
				return err
			}
			out := c.String("out")
			fmt.Fprintf(c.App.Writer, "wrote %s, %s, %d figures (PNG and SVG) and %d tables\n",
				filepath.Join(out, rep.HTML), filepath.Join(out, rep.MD), len(rep.Figures), len(rep.Tables))
			return nil
		},
		ExitErrHandler: func(*cli.Context, error) {},
	}
}
