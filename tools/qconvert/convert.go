package main

import (
	"encoding/json"
	"strings"

	"github.com/urfave/cli/v2"

	"qllama/convert"
)

// convertFlags are the flags of the default action and of `qconvert convert`.
func convertFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "in", Aliases: []string{"i"}, Usage: "Hugging Face Llama directory to convert"},
		&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "GGUF file to write (atomically)"},
		&cli.StringFlag{Name: "method", Aliases: []string{"m"}, Usage: "format of every weight: " + strings.Join(convert.Methods(), "|")},
		&cli.IntFlag{Name: "bits", Usage: "rtn: bits per code, 2..8 (default 4)"},
		&cli.IntFlag{Name: "group", Usage: "rtn: group size (default 128, -1 per channel); nf4/fp4: absmax block size (default 64)"},
		&cli.BoolFlag{Name: "sym", Usage: "rtn: symmetric (no zero points)"},
		&cli.BoolFlag{Name: "double-quant", Usage: "nf4/fp4: quantize the absmax to 8 bits (bitsandbytes compress_statistics)"},
		&cli.StringFlag{Name: "calib", Usage: "gptq/awq: calibration text (plain text, or JSONL with a \"text\" field), e.g. wikitext-2 or c4 (README)"},
		&cli.IntFlag{Name: "calib-samples", Usage: "gptq/awq: calibration windows (default 128)"},
		&cli.IntFlag{Name: "calib-len", Usage: "gptq/awq: tokens per window (default 2048 gptq, 512 awq)"},
		&cli.Uint64Flag{Name: "calib-seed", Usage: "gptq/awq: seed of the window offsets"},
		&cli.StringFlag{Name: "importance", Usage: "gptq/awq: write the per-column importance (mean x^2) of every linear layer to this JSON file"},
		&cli.BoolFlag{Name: "act-order", Usage: "gptq: quantize columns by decreasing Hessian diagonal (static groups)"},
		&cli.BoolFlag{Name: "awq-reference-qk", Usage: "awq: as the reference implementation, neither clip q_proj/k_proj nor guard their error in the q,k,v scale search"},
		&cli.StringFlag{Name: "type", Usage: "format of the linear layers (default: --method)"},
		&cli.StringFlag{Name: "embed-type", Usage: "format of token_embd (default: --type)"},
		&cli.StringFlag{Name: "head-type", Usage: "format of the output projection (default: --embed-type; written separately when it differs from a tied embedding)"},
		&cli.IntFlag{Name: "threads", Usage: "quantizing goroutines (default: all cores)"},
		&cli.StringFlag{Name: "device", Usage: "gptq/awq: where calibration runs, cpu or cuda (default: cuda when this build has CUDA and a GPU is present)"},
		&cli.IntFlag{Name: "gpu", Usage: "gptq/awq with --device cuda: the GPU ordinal"},
		&cli.BoolFlag{Name: "json", Usage: "print the report as JSON instead of a table"},
	}
}

func convertCommand() *cli.Command {
	return &cli.Command{
		Name:      "convert",
		Usage:     "convert a Hugging Face Llama directory into one GGUF file (also the default action)",
		UsageText: "qconvert convert --in HF_DIR --out FILE --method METHOD [options]",
		Flags:     convertFlags(),
		Action:    runConvert,
	}
}

// runConvert converts, printing the per-tensor table and summary (or JSON).
func runConvert(c *cli.Context) error {
	for _, f := range []string{"in", "out", "method"} {
		if c.String(f) == "" {
			if c.NArg() == 0 && c.NumFlags() == 0 {
				return cli.ShowAppHelp(c)
			}
			return usageError("--%s is required", f)
		}
	}
	if c.NArg() > 0 {
		return usageError("unexpected argument %q", c.Args().First())
	}
	opt := convert.Options{
		In: c.String("in"), Out: c.String("out"), Method: c.String("method"),
		Bits: c.Int("bits"), Group: c.Int("group"), Sym: c.Bool("sym"), DoubleQuant: c.Bool("double-quant"),
		Calib: c.String("calib"), CalibSamples: c.Int("calib-samples"), CalibLen: c.Int("calib-len"), CalibSeed: c.Uint64("calib-seed"), ActOrder: c.Bool("act-order"), AWQReferenceQK: c.Bool("awq-reference-qk"), Importance: c.String("importance"),
		Type: c.String("type"), EmbedType: c.String("embed-type"), HeadType: c.String("head-type"),
		Threads: c.Int("threads"), Progress: c.App.ErrWriter,
	}
	for _, m := range []string{opt.Method, opt.Type} {
		if m != convert.MethodGPTQ && m != convert.MethodAWQ {
			continue
		}
		gptqRun, awqRun, release, err := calibDevice(c.String("device"), c.Int("gpu"))
		if err != nil {
			return err
		}
		defer release()
		opt.GPTQ, opt.AWQ = gptqRun, awqRun
		break
	}
	rep, err := convert.Convert(c.Context, opt)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.WriteTable(c.App.Writer)
}
