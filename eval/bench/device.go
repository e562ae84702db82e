package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// DeviceProbe describes an accelerator and measures its energy. NVML is the
// implementation for NVIDIA GPUs; tests use fakes.
type DeviceProbe interface {
	// Describe returns the device's name, driver and clocks now.
	Describe() (*GPUInfo, error)
	// Meter starts measuring energy until Stop.
	Meter() (Meter, error)
}

// Meter measures the energy a device uses between its start and Stop.
type Meter interface {
	Stop() (Energy, error)
}

// Energy is what a Meter measured.
type Energy struct {
	Joules  float64 `json:"joules"`
	Seconds float64 `json:"seconds"`
}

// DeviceInfo records where a benchmark ran.
type DeviceInfo struct {
	Backend  string   `json:"backend"`
	Host     string   `json:"host,omitempty"`
	OS       string   `json:"os"`
	Arch     string   `json:"arch"`
	CPU      string   `json:"cpu,omitempty"`
	CPUMHz   float64  `json:"cpu_mhz,omitempty"`
	Threads  int      `json:"threads"` // GOMAXPROCS
	NumCPU   int      `json:"num_cpu"`
	GoVer    string   `json:"go"`
	GPU      *GPUInfo `json:"gpu,omitempty"`
	MemTotal int64    `json:"mem_total_bytes,omitempty"`
}

// GPUInfo is an NVIDIA device as NVML reports it.
type GPUInfo struct {
	Index         int     `json:"index"`
	Name          string  `json:"name"`
	UUID          string  `json:"uuid,omitempty"`
	Driver        string  `json:"driver,omitempty"`
	CUDADriver    int     `json:"cuda_driver_version,omitempty"`
	MemoryBytes   uint64  `json:"memory_bytes,omitempty"`
	SMClockMHz    uint32  `json:"sm_clock_mhz,omitempty"`
	MemClockMHz   uint32  `json:"mem_clock_mhz,omitempty"`
	MaxSMClockMHz uint32  `json:"max_sm_clock_mhz,omitempty"`
	MaxMemClock   uint32  `json:"max_mem_clock_mhz,omitempty"`
	PowerLimitW   float64 `json:"power_limit_watts,omitempty"`
	// EnergyCounter reports whether the device has a total-energy counter
	// (Volta and newer); otherwise power is sampled.
	EnergyCounter bool `json:"energy_counter"`
}

// hostInfo describes the machine the process runs on.
func hostInfo(backend string) DeviceInfo {
	if backend == "" {
		backend = "cpu"
	}
	d := DeviceInfo{Backend: backend, OS: runtime.GOOS, Arch: runtime.GOARCH, Threads: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(), GoVer: runtime.Version()}
	d.Host, _ = os.Hostname()
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		d.CPU, d.CPUMHz = parseCPUInfo(data)
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		d.MemTotal = procKB(data, "MemTotal:")
	}
	return d
}

// parseCPUInfo returns the first "model name" and the mean "cpu MHz" of
// /proc/cpuinfo.
func parseCPUInfo(data []byte) (string, float64) {
	var name string
	var mhz float64
	var n int
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name":
			if name == "" {
				name = strings.TrimSpace(v)
			}
		case "cpu MHz":
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				mhz += f
				n++
			}
		}
	}
	if n > 0 {
		mhz /= float64(n)
	}
	return name, mhz
}

// procKB returns the value of a "Key:  N kB" line in bytes, 0 if absent.
func procKB(data []byte, key string) int64 {
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				if v, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					if len(f) >= 2 && strings.EqualFold(f[1], "kB") {
						v *= 1024
					}
					return v
				}
			}
		}
	}
	return 0
}

// PeakRSS is the process's peak resident set size in bytes: VmHWM from
// /proc/self/status, or getrusage's ru_maxrss where /proc is missing.
func PeakRSS() (int64, error) {
	if data, err := os.ReadFile("/proc/self/status"); err == nil {
		if v := procKB(data, "VmHWM:"); v > 0 {
			return v, nil
		}
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	if runtime.GOOS == "darwin" {
		return ru.Maxrss, nil // bytes on macOS
	}
	return ru.Maxrss * 1024, nil // kilobytes on Linux and the BSDs
}

// resetPeakRSS resets VmHWM to the current RSS (Linux 4.0+), so PeakRSS
// measures from now on.
func resetPeakRSS() error {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}
