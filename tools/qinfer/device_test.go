package main

import (
	"strings"
	"testing"
)

func TestPickDevice(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{"cpu", "cpu", ""},
		{"tpu", "", "want cpu or cuda"},
	} {
		got, err := pickDevice(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	// The default and cuda depend on the build.
	def, err := pickDevice("")
	if err != nil {
		t.Fatal(err)
	}
	_, cerr := pickDevice("cuda")
	switch {
	case !cudaBuilt && (def != "cpu" || cerr == nil || !strings.Contains(cerr.Error(), "built without CUDA")):
		t.Errorf("CPU-only build: default %q, cuda error %v", def, cerr)
	case cudaBuilt && cudaAvailable() && (def != "cuda" || cerr != nil):
		t.Errorf("CUDA build with a GPU: default %q, cuda error %v", def, cerr)
	}
}

func TestPickKVCache(t *testing.T) {
	for _, tc := range []struct {
		kv, dev, want, err string
	}{
		{"auto", "cuda", "auto", ""},
		{"f16", "cuda", "f16", ""},
		{"f32", "cpu", "f32", ""},
		{"auto", "cpu", "auto", ""},
		{"f16", "cpu", "", "keeps its KV cache in float32"},
		{"q8", "cuda", "", "want auto, f16 or f32"},
	} {
		got, err := pickKVCache(tc.kv, tc.dev)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s on %s: error %v, want one containing %q", tc.kv, tc.dev, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s on %s: got %q, %v; want %q", tc.kv, tc.dev, got, err, tc.want)
		}
	}
}
