package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"qllama/convert/random"
	"qllama/internal/progress"
)

func randomCommand() *cli.Command {
	return &cli.Command{
		Name:  "random",
		Usage: "write a random-weight Hugging Face Llama directory of a real shape (config, BF16 safetensors, generated tokenizer)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "shape", Value: "tiny", Usage: "one of " + strings.Join(random.ShapeNames(), ", ")},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "random seed (same seed, same bytes)"},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Required: true, Usage: "output directory (must not exist or be empty)"},
			&cli.IntFlag{Name: "threads", Usage: "generator goroutines (default: all cores)"},
		},
		Action: func(c *cli.Context) error {
			s, err := random.Lookup(c.String("shape"))
			if err != nil {
				return err
			}
			start := time.Now()
			total := s.Bytes()
			bar := progress.New(c.App.ErrWriter, total, "random "+s.Name, progress.Options{Bytes: true})
			err = random.Write(c.Context, c.String("out"), s, random.Options{
				Seed: c.Uint64("seed"), Threads: c.Int("threads"), Progress: bar.Add,
			})
			if err != nil {
				return err
			}
			bar.Finish()
			el := time.Since(start)
			fmt.Fprintf(c.App.Writer, "wrote %s: shape %s, %.2f GB of BF16 weights in %.1fs (%.0f MB/s)\n",
				c.String("out"), s.Name, float64(total)/1e9, el.Seconds(), float64(total)/1e6/el.Seconds())
			return nil
		},
	}
}
