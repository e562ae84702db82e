package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"qllama/eval/bench"
	"qllama/eval/ppl"
	"qllama/infer"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure memory, time to first token, decode latency percentiles and throughput by batch size; JSON out",
		Description: "Every measurement runs once untimed (warm-up), then --repeats times; medians are reported.\n" +
			"Memory: weight bytes, KV-cache bytes per token, peak memory (CPU: the process's peak resident set,\n" +
			"reset at the start where Linux allows). Device, driver and clocks come from NVML when an NVIDIA driver\n" +
			"is present (looked up at run time; machines without one run unchanged).",
		Flags: append(modelFlags(), append(benchFlags(""),
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "write the JSON here (default: print it)"},
			&cli.StringFlag{Name: "nvml", Value: "auto", Usage: "record the GPU with NVML: auto (when a driver is present), on (fail without one) or off"},
			&cli.IntFlag{Name: "gpu", Usage: "GPU index (the CUDA backend's, and the one NVML describes)"},
		)...),
		Action: runBench,
	}
}

// benchFlags are the measurement settings; prefix is "" for qinfer bench and
// "bench-" for qinfer sweep, where they override experiments.toml.
func benchFlags(prefix string) []cli.Flag {
	def := func(v string) string {
		if prefix != "" {
			return ""
		}
		return v
	}
	over := ""
	if prefix != "" {
		over = " (overrides experiments.toml)"
	}
	return []cli.Flag{
		&cli.StringFlag{Name: prefix + "prompts", Value: def("128,512,2048"), Usage: "prompt lengths timed for time to first token" + over},
		&cli.StringFlag{Name: prefix + "batches", Value: def("1,8,32,64"), Usage: "batch sizes timed for decode throughput" + over},
		&cli.IntFlag{Name: prefix + "context", Usage: fmt.Sprintf("prompt tokens per sequence before decoding is timed (default %d)", bench.DefaultContext) + over},
		&cli.IntFlag{Name: prefix + "decode-tokens", Usage: fmt.Sprintf("timed decode steps per run (default %d)", bench.DefaultDecodeTokens) + over},
		&cli.IntFlag{Name: prefix + "repeats", Usage: fmt.Sprintf("timed runs per measurement, median reported (default %d)", bench.DefaultRepeats) + over},
	}
}

// parseInts parses "128,512" (empty: nil).
func parseInts(flag, s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("--%s %q: want positive integers separated by commas", flag, s)
		}
		out = append(out, v)
	}
	return out, nil
}

// benchOptions reads the benchmark flags of benchFlags(prefix) into o,
// keeping o's values where a flag is unset.
func benchOptions(c *cli.Context, prefix string, o *bench.Options) error {
	for _, f := range []struct {
		name string
		dst  *[]int
	}{{"prompts", &o.Prompts}, {"batches", &o.Batches}} {
		v, err := parseInts(prefix+f.name, c.String(prefix+f.name))
		if err != nil {
			return err
		}
		if v != nil {
			*f.dst = v
		}
	}
	for _, f := range []struct {
		name string
		dst  *int
	}{{"context", &o.Context}, {"decode-tokens", &o.DecodeTokens}, {"repeats", &o.Repeats}} {
		if v := c.Int(prefix + f.name); v != 0 {
			if v < 0 {
				return fmt.Errorf("--%s %d: must be positive", prefix+f.name, v)
			}
			*f.dst = v
		}
	}
	return nil
}

// describeOnly is an NVML probe that records the device but measures no
// energy: the model runs on the CPU, so the GPU's power is not its cost.
type describeOnly struct{ n *bench.NVML }

func (d describeOnly) Describe() (*bench.GPUInfo, error) { return d.n.Describe() }
func (d describeOnly) Meter() (bench.Meter, error) {
	return nil, fmt.Errorf("energy is measured only for GPU backends")
}

// backend is a model placed on the CPU or a GPU.
type backend struct {
	name   string
	target bench.Target
	gen    generator
	energy bool // the model runs on the GPU NVML meters
	// scorer runs perplexity windows on the same device (not safe for
	// concurrent use; closed with the backend).
	scorer ppl.Scorer
	close  func()
}

// openBackend places l's model on the device --device names (see
// pickDevice): the CPU runtime, or GPU gpu.
func openBackend(device string, gpu int, l *loaded, info bench.ModelInfo) (*backend, error) {
	dev, err := pickDevice(device)
	if err != nil {
		return nil, err
	}
	if dev == "cuda" {
		return cudaBackend(gpu, l, info)
	}
	return &backend{name: "cpu", target: bench.NewInferTarget(l.model, info), gen: infer.NewRunner(l.model), scorer: ppl.CPU(l.model), close: func() {}}, nil
}

// probe returns the device probe for a benchmark on b: NVML with energy for
// a GPU backend, description only for the CPU.
func probe(nv *bench.NVML, b *backend) bench.DeviceProbe {
	switch {
	case nv == nil:
		return nil
	case b.energy:
		return nv
	}
	return describeOnly{nv}
}

// openProbe opens NVML per --nvml: nil (and no error) when off, or when auto
// finds no driver.
func openProbe(mode string, gpu int) (*bench.NVML, error) {
	switch mode {
	case "off":
		return nil, nil
	case "auto", "on":
		n, err := bench.OpenNVML(gpu)
		if err != nil {
			if mode == "on" {
				return nil, fmt.Errorf("--nvml on: %w", err)
			}
			return nil, nil
		}
		return n, nil
	}
	return nil, fmt.Errorf("--nvml %q: want auto, on or off", mode)
}

func runBench(c *cli.Context) error {
	var opt bench.Options
	if err := benchOptions(c, "", &opt); err != nil {
		return err
	}
	nv, err := openProbe(c.String("nvml"), c.Int("gpu"))
	if err != nil {
		return err
	}
	if nv != nil {
		defer nv.Close()
	}
	l, err := openModel(c)
	if err != nil {
		return err
	}
	defer l.Close()
	info := describe(l)
	opt.Log = func(format string, args ...any) { fmt.Fprintf(c.App.ErrWriter, "bench: "+format+"\n", args...) }
	b, err := openBackend(c.String("device"), c.Int("gpu"), l, bench.ModelInfo{Path: l.path, Format: info.Format + " " + info.DType, Params: info.Params, WeightBytes: info.WeightBytes})
	if err != nil {
		return err
	}
	defer b.close()
	opt.Device = probe(nv, b)
	t := b.target
	res, err := bench.Run(c.Context, t, opt)
	if err != nil {
		return fmt.Errorf("bench %s: %w", l.path, err)
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(c.App.ErrWriter, "bench: warning:", w)
	}
	if out := c.String("out"); out != "" {
		return res.WriteJSON(out)
	}
	enc := json.NewEncoder(c.App.Writer)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}
