package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"qllama/infer"
)

func logitsCommand() *cli.Command {
	return &cli.Command{
		Name:  "logits",
		Usage: "print the full-vocabulary float32 logits for a sequence of token ids as JSON",
		Flags: append(modelFlags(),
			&cli.StringFlag{Name: "ids", Required: true, Usage: "comma-separated token ids, e.g. 1,2,3 (BOS is not added)"},
			&cli.BoolFlag{Name: "all-positions", Usage: `print {"positions": [[...], ...]} for every position instead of {"last": [...]}`},
		),
		Action: func(c *cli.Context) error {
			ids, err := parseIDs(c.String("ids"))
			if err != nil {
				return err
			}
			if err := cpuOnly(c); err != nil {
				return err
			}
			l, err := openModel(c)
			if err != nil {
				return err
			}
			defer l.Close()
			all := c.Bool("all-positions")
			out, err := infer.NewRunner(l.model).Forward([]infer.Step{{Cache: infer.NewKVCache(&l.model.Config), Tokens: ids, AllLogits: all}})
			if err != nil {
				return err
			}
			enc := json.NewEncoder(c.App.Writer)
			if all {
				return enc.Encode(map[string][][]float32{"positions": out[0]})
			}
			return enc.Encode(map[string][]float32{"last": out[0][0]})
		},
	}
}

// parseIDs parses "1,2,3".
func parseIDs(s string) ([]int, error) {
	var ids []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		id, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("--ids: %q is not a token id", f)
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("--ids: no token ids given")
	}
	return ids, nil
}
