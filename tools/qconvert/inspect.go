package main

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"qllama/format/gguf"
)

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "print a GGUF file's metadata (arrays summarised) and tensors (name, type, shape, bytes, offset)",
		UsageText: "qconvert inspect [--json] FILE",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.IntFlag{Name: "max-array", Value: 8, Usage: "array elements shown before summarising"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError("want exactly one FILE argument, got %d", c.NArg())
			}
			f, err := gguf.Open(c.Args().First())
			if err != nil {
				return err
			}
			defer f.Close()
			info := inspect(f, c.Int("max-array"))
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			return info.write(c.App.Writer)
		},
	}
}

// inspection is what inspect prints.
type inspection struct {
	Path       string         `json:"path"`
	Version    uint32         `json:"version"`
	Size       int64          `json:"size"`
	Alignment  int64          `json:"alignment"`
	DataOffset int64          `json:"data_offset"`
	Metadata   []inspectedKV  `json:"metadata"`
	Tensors    []inspectedTen `json:"tensors"`
}

type inspectedKV struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Len   int    `json:"len,omitempty"` // arrays: element count
	Value any    `json:"value"`         // arrays: the first elements only
}

type inspectedTen struct {
	Name   string  `json:"name"`
	Type   string  `json:"type"`
	Shape  []int64 `json:"shape"`
	Bytes  int64   `json:"bytes"`
	Offset int64   `json:"offset"`
}

func inspect(f *gguf.File, maxArray int) inspection {
	in := inspection{Path: f.Path(), Version: f.Version, Size: f.Size(), Alignment: f.Alignment, DataOffset: f.DataOffset}
	for _, kv := range f.KVs() {
		vt, _ := gguf.ValueTypeOf(kv.Value)
		k := inspectedKV{Key: kv.Key, Type: vt.String(), Value: kv.Value}
		if rv := reflect.ValueOf(kv.Value); rv.Kind() == reflect.Slice {
			k.Len = rv.Len()
			k.Type = fmt.Sprintf("[]%s", rv.Type().Elem())
			if rv.Len() > maxArray {
				k.Value = rv.Slice(0, max(maxArray, 0)).Interface()
			}
		}
		in.Metadata = append(in.Metadata, k)
	}
	for _, t := range f.Tensors() {
		in.Tensors = append(in.Tensors, inspectedTen{Name: t.Name, Type: t.Type.String(), Shape: t.Shape, Bytes: t.Size, Offset: t.Offset})
	}
	return in
}

func (in inspection) write(w interface{ Write([]byte) (int, error) }) error {
	fmt.Fprintf(w, "%s: GGUF v%d, %d bytes, alignment %d, data at %d\n\n", in.Path, in.Version, in.Size, in.Alignment, in.DataOffset)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "key\ttype\tvalue\n")
	for _, kv := range in.Metadata {
		v := fmt.Sprintf("%v", kv.Value)
		if s, ok := kv.Value.(string); ok {
			v = fmt.Sprintf("%q", s)
			if len(v) > 120 {
				v = v[:117] + "..."
			}
		}
		if kv.Len > 0 || strings.HasPrefix(kv.Type, "[]") {
			v = fmt.Sprintf("%d elements %v", kv.Len, kv.Value)
			if reflect.ValueOf(kv.Value).Len() < kv.Len {
				v = strings.TrimSuffix(v, "]") + " ...]"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", kv.Key, kv.Type, v)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%d tensors\n", len(in.Tensors))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "name\ttype\tshape\tbytes\toffset\n")
	for _, t := range in.Tensors {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%d\n", t.Name, t.Type, t.Shape, t.Bytes, t.Offset)
	}
	return tw.Flush()
}
