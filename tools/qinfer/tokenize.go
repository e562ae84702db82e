package main

import (
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"
)

func tokenizeCommand() *cli.Command {
	return &cli.Command{
		Name:  "tokenize",
		Usage: "print the token ids of a text as a JSON array",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Required: true, Usage: "model: a Hugging Face directory (tokenizer.json) or a GGUF file"},
			&cli.StringFlag{Name: "text", Aliases: []string{"t"}, Required: true, Usage: "text to tokenize"},
			&cli.BoolFlag{Name: "no-bos", Usage: "do not prepend the BOS token"},
		},
		Action: func(c *cli.Context) error {
			tok, err := openTokenizer(c.String("model"))
			if err != nil {
				return err
			}
			ids := encodePrompt(tok, c.String("text"), c.Bool("no-bos"))
			if ids == nil {
				ids = []int{}
			}
			b, err := json.Marshal(ids)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(c.App.Writer, string(b))
			return err
		},
	}
}
