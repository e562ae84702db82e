//go:build !linux || !cgo

package bench

import "fmt"

// NVML is a DeviceProbe for one NVIDIA GPU; this build (no cgo or not
// Linux) has no NVML support and OpenNVML always fails.
type NVML struct{}

// OpenNVML fails: NVML needs cgo on Linux.
func OpenNVML(index int) (*NVML, error) {
	return nil, fmt.Errorf("nvml: GPU %d: this binary was built without cgo or not for Linux: %w", index, errNoDevice)
}

// Close does nothing.
func (n *NVML) Close() error { return nil }

// Describe implements DeviceProbe.
func (n *NVML) Describe() (*GPUInfo, error) { return nil, errNoDevice }

// Meter implements DeviceProbe.
func (n *NVML) Meter() (Meter, error) { return nil, errNoDevice }
