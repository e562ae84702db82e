//go:build tools

package qllama

import (
	_ "github.com/BurntSushi/toml"
	_ "github.com/dlclark/regexp2"
	_ "github.com/gpustack/gguf-parser-go"
	_ "github.com/schollz/progressbar/v3"
	_ "github.com/urfave/cli/v2"
	_ "github.com/x448/float16"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/term"
)
