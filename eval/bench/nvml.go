//go:build linux && cgo

package bench

import (
	"fmt"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVML is a DeviceProbe for one NVIDIA GPU. The NVML library
// (libnvidia-ml.so.1) is opened at run time by OpenNVML, so binaries run on
// machines without it; call Close when done.
type NVML struct {
	lib   nvml.Interface
	dev   nvml.Device
	index int
}

// OpenNVML loads NVML and opens GPU index. It fails, without side effects,
// on machines without an NVIDIA driver.
func OpenNVML(index int) (n *NVML, err error) {
	defer func() {
		// go-nvml panics on some broken installations; treat as absent.
		if r := recover(); r != nil {
			n, err = nil, fmt.Errorf("nvml: %v: %w", r, errNoDevice)
		}
	}()
	lib := nvml.New()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml: init: %s: %w", lib.ErrorString(ret), errNoDevice)
	}
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Errorf("nvml: device count: %s", lib.ErrorString(ret))
	}
	if index < 0 || index >= count {
		lib.Shutdown()
		return nil, fmt.Errorf("nvml: GPU %d does not exist (%d GPUs): %w", index, count, errNoDevice)
	}
	dev, ret := lib.DeviceGetHandleByIndex(index)
	if ret != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Errorf("nvml: GPU %d: %s", index, lib.ErrorString(ret))
	}
	return &NVML{lib: lib, dev: dev, index: index}, nil
}

// Close releases NVML.
func (n *NVML) Close() error {
	if ret := n.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("nvml: shutdown: %s", n.lib.ErrorString(ret))
	}
	return nil
}

// Describe implements DeviceProbe.
func (n *NVML) Describe() (*GPUInfo, error) {
	g := &GPUInfo{Index: n.index}
	var ret nvml.Return
	if g.Name, ret = n.dev.GetName(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml: GPU %d name: %s", n.index, n.lib.ErrorString(ret))
	}
	g.UUID, _ = n.dev.GetUUID()
	g.Driver, _ = n.lib.SystemGetDriverVersion()
	g.CUDADriver, _ = n.lib.SystemGetCudaDriverVersion()
	if m, ret := n.dev.GetMemoryInfo(); ret == nvml.SUCCESS {
		g.MemoryBytes = m.Total
	}
	g.SMClockMHz, _ = n.dev.GetClockInfo(nvml.CLOCK_SM)
	g.MemClockMHz, _ = n.dev.GetClockInfo(nvml.CLOCK_MEM)
	g.MaxSMClockMHz, _ = n.dev.GetMaxClockInfo(nvml.CLOCK_SM)
	g.MaxMemClock, _ = n.dev.GetMaxClockInfo(nvml.CLOCK_MEM)
	if mw, ret := n.dev.GetPowerManagementLimit(); ret == nvml.SUCCESS {
		g.PowerLimitW = float64(mw) / 1e3
	}
	_, ret = n.dev.GetTotalEnergyConsumption()
	g.EnergyCounter = ret == nvml.SUCCESS
	return g, nil
}

// Meter implements DeviceProbe: the total-energy counter where the GPU has
// one, else power sampled every 20 ms and integrated.
func (n *NVML) Meter() (Meter, error) {
	t0 := time.Now()
	if mj, ret := n.dev.GetTotalEnergyConsumption(); ret == nvml.SUCCESS {
		return &counterMeter{n: n, t0: t0, mj0: mj}, nil
	}
	if _, ret := n.dev.GetPowerUsage(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml: GPU %d has neither an energy counter nor power readings: %s", n.index, n.lib.ErrorString(ret))
	}
	s := &sampleMeter{n: n, t0: t0, stop: make(chan struct{}), done: make(chan struct{})}
	go s.loop()
	return s, nil
}

type counterMeter struct {
	n   *NVML
	t0  time.Time
	mj0 uint64
}

func (m *counterMeter) Stop() (Energy, error) {
	mj, ret := m.n.dev.GetTotalEnergyConsumption()
	el := time.Since(m.t0).Seconds()
	if ret != nvml.SUCCESS {
		return Energy{}, fmt.Errorf("nvml: energy: %s", m.n.lib.ErrorString(ret))
	}
	return Energy{Joules: float64(mj-m.mj0) / 1e3, Seconds: el}, nil
}

type sampleMeter struct {
	n          *NVML
	t0         time.Time
	stop, done chan struct{}
	mu         sync.Mutex
	joules     float64
}

func (m *sampleMeter) loop() {
	defer close(m.done)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-m.stop:
			return
		case now := <-tick.C:
			if mw, ret := m.n.dev.GetPowerUsage(); ret == nvml.SUCCESS {
				m.mu.Lock()
				m.joules += float64(mw) / 1e3 * now.Sub(last).Seconds()
				m.mu.Unlock()
			}
			last = now
		}
	}
}

func (m *sampleMeter) Stop() (Energy, error) {
	close(m.stop)
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return Energy{Joules: m.joules, Seconds: time.Since(m.t0).Seconds()}, nil
}
