//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	"slices"

	"gorgonia.org/cu"
)

// The KV cache is paged, as in vLLM: a page holds kvPage consecutive
// positions of one sequence for every layer, laid out
// [layer][k|v][kvPage][KVHeads*HeadDim] in the cache's element type, and a
// Cache is a list of pages. Pages come from the model's pool, which carves
// them out of device allocations of kvSlabPages pages (a slab is freed only
// with the model, or by TrimKV once all its pages are free), and they are
// reference counted: a cache that copies another's prefix shares its pages,
// and a page is copied only when a holder writes into it while it is shared
// (the partly filled last page of a prefix). So the prompts of a CoQA batch
// take memory in proportion to what they hold, not to a reserved maximum,
// and the turns of a story share the story's pages.
const (
	kvPage      = 16 // positions per page (KV_PAGE in kernels/qllama.cuh)
	kvSlabPages = 64 // pages per device allocation of the pool
)

// KV cache element types (SetKVType). Float32 keeps the CPU backend's
// numerics; FP16 halves the cache's memory and the bytes attention reads.
const (
	KVAuto = "auto" // float32 for a model whose weights are all float32 (the reference), else FP16
	KVF32  = "f32"
	KVF16  = "f16"
)

// pagePool hands out KV cache pages of one model.
type pagePool struct {
	pageBytes int64
	slabs     []slab
	free      []cu.DevicePtr // pages not held by any cache, last out first
	refs      map[cu.DevicePtr]int32
}

type slab struct {
	base  cu.DevicePtr
	pages int
}

// kvKernels are the names of the kernels that touch the cache, for its
// element type.
type kvKernels struct {
	rope, attn, decode, gather string
}

// SetKVType picks the cache's element type (KVAuto, KVF32 or KVF16). It
// must be called before any cache holds pages (Upload sets KVAuto).
func (g *Model) SetKVType(t string) error {
	switch t {
	case KVAuto, "":
		t = KVF16
		if g.precise {
			t = KVF32
		}
	case KVF32, KVF16:
	default:
		return fmt.Errorf("cuda: KV cache type %q: want %s, %s or %s", t, KVAuto, KVF32, KVF16)
	}
	if g.kv != nil && len(g.kv.refs) > 0 {
		return fmt.Errorf("cuda: KV cache type %s: %d pages are in use; set it before making caches", t, len(g.kv.refs))
	}
	g.freeKV()
	g.kvType = t
	g.kvNames = kvKernels{rope: "rope_store_" + t, attn: "attn_split_" + t, decode: "attn_decode_" + t, gather: "kv_gather_" + t}
	g.dropGraphs() // they name the old kernels
	return nil
}

// KVType is the cache's element type, KVF32 or KVF16.
func (g *Model) KVType() string { return g.kvType }

// KVBytesPerToken is the cache memory one position takes (keys and values of
// every layer).
func (g *Model) KVBytesPerToken() int64 {
	elem := int64(2)
	if g.kvType == KVF32 {
		elem = 4
	}
	return int64(g.Layers) * 2 * g.kvDim() * elem
}

// KVBytes is the device memory the page pool holds (pages in use and free).
func (g *Model) KVBytes() int64 {
	if g.kv == nil {
		return 0
	}
	var n int64
	for _, s := range g.kv.slabs {
		n += int64(s.pages) * g.kv.pageBytes
	}
	return n
}

// pool returns g's page pool, creating it on first use.
func (g *Model) pool() *pagePool {
	if g.kv == nil {
		g.kv = &pagePool{pageBytes: kvPage * g.KVBytesPerToken(), refs: map[cu.DevicePtr]int32{}}
	}
	return g.kv
}

// page takes a free page, growing the pool by a slab (or, when that does not
// fit, by one page) if none is left.
func (g *Model) page() (cu.DevicePtr, error) {
	p := g.pool()
	if len(p.free) == 0 {
		n := kvSlabPages
		for {
			base, err := g.d.alloc(int64(n)*p.pageBytes, fmt.Sprintf("KV cache pages for %d positions (%s each)", n*kvPage, mib(p.pageBytes/kvPage)))
			if err != nil {
				var oom *OOMError
				if n > 1 && errors.As(err, &oom) {
					n = 1
					continue
				}
				return 0, err
			}
			p.slabs = append(p.slabs, slab{base, n})
			for i := n - 1; i >= 0; i-- {
				p.free = append(p.free, base+cu.DevicePtr(int64(i)*p.pageBytes))
			}
			break
		}
	}
	pg := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	p.refs[pg] = 1
	return pg, nil
}

// unref drops one hold on page pg; the last returns it to the free list.
func (g *Model) unref(pg cu.DevicePtr) {
	p := g.kv
	if p == nil || p.refs[pg] == 0 {
		return // the model was closed (its slabs are gone), or pg is not held
	}
	if p.refs[pg]--; p.refs[pg] > 0 {
		return
	}
	delete(p.refs, pg)
	p.free = append(p.free, pg)
}

// TrimKV frees the pool's slabs whose pages are all free (after a large batch,
// or DropPrefixes), waiting for queued work first.
func (g *Model) TrimKV() error {
	p := g.kv
	if p == nil {
		return nil
	}
	defer g.d.bind()()
	if err := g.d.st.sync(); err != nil {
		return err
	}
	freeSet := map[cu.DevicePtr]bool{}
	for _, pg := range p.free {
		freeSet[pg] = true
	}
	kept := p.slabs[:0]
	var gone []slab
	for _, s := range p.slabs {
		all := true
		for i := range s.pages {
			all = all && freeSet[s.base+cu.DevicePtr(int64(i)*p.pageBytes)]
		}
		if all {
			gone = append(gone, s)
		} else {
			kept = append(kept, s)
		}
	}
	p.slabs = kept
	p.free = slices.DeleteFunc(p.free, func(pg cu.DevicePtr) bool {
		for _, s := range gone {
			if pg >= s.base && pg < s.base+cu.DevicePtr(int64(s.pages)*p.pageBytes) {
				return true
			}
		}
		return false
	})
	for _, s := range gone {
		cu.MemFree(s.base)
	}
	return nil
}

// freeKV frees every slab (the model is closing, or the element type
// changes); caches still holding pages must not be used again.
func (g *Model) freeKV() {
	if g.kv == nil {
		return
	}
	for _, s := range g.kv.slabs {
		cu.MemFree(s.base)
	}
	g.kv.slabs, g.kv.free, g.kv.refs = nil, nil, nil
	g.kv = nil
}

// Cache is one sequence's keys and values on the device: a list of pages of
// the model's pool (see kvPage). It grows by a page when a step needs more
// positions than it holds.
type Cache struct {
	Len   int // positions held
	g     *Model
	pages []cu.DevicePtr
}

// NewCache makes a cache with pages for capacity positions (none for 0).
func (g *Model) NewCache(capacity int) (*Cache, error) {
	defer g.d.bind()()
	c := &Cache{g: g}
	if err := c.reserve(capacity); err != nil {
		c.Free()
		return nil, err
	}
	return c, nil
}

func (g *Model) kvDim() int64 { return int64(g.KVHeads * g.HeadDim) }

// pagesFor is the pages that hold positions [0, n).
func pagesFor(n int) int { return (n + kvPage - 1) / kvPage }

// Cap is the positions the cache's pages hold.
func (c *Cache) Cap() int { return len(c.pages) * kvPage }

// reserve adds pages until the cache holds n positions. More than the pool's
// free pages and the device's free memory can give is an OOMError at once.
func (c *Cache) reserve(n int) error {
	missing := int64(pagesFor(n-c.Cap())) - int64(len(c.g.pool().free))
	if missing > 0 {
		need := missing * c.g.kv.pageBytes
		if free, total, err := c.g.d.MemInfo(); err == nil && need > free {
			return &OOMError{What: fmt.Sprintf("a KV cache of %d positions (%d bytes per position)", n, c.g.KVBytesPerToken()),
				Need: need, Free: free, Total: total, Err: errors.New("the pages do not fit")}
		}
	}
	for c.Cap() < n {
		pg, err := c.g.page()
		if err != nil {
			return err
		}
		c.pages = append(c.pages, pg)
	}
	return nil
}

// writable makes room for k more positions and gives the cache its own copy
// of every page they fall in that it shares with another cache (the page
// holding position Len keeps its earlier positions). Copies are queued on the
// device's stream.
func (c *Cache) writable(k int) error {
	if err := c.reserve(c.Len + k); err != nil {
		return err
	}
	g := c.g
	for i := c.Len / kvPage; i <= (c.Len+k-1)/kvPage; i++ {
		old := c.pages[i]
		if g.kv.refs[old] <= 1 {
			continue
		}
		pg, err := g.page()
		if err != nil {
			return err
		}
		if i*kvPage < c.Len {
			if err := g.d.st.copyDtoD(pg, old, g.kv.pageBytes); err != nil {
				g.unref(pg)
				return fmt.Errorf("cuda: copying a shared KV cache page: %w", err)
			}
		}
		g.unref(old)
		c.pages[i] = pg
	}
	return nil
}

// Truncate forgets every position at or after n (the pages stay with the
// cache).
func (c *Cache) Truncate(n int) { c.Len = min(c.Len, max(n, 0)) }

// Free returns the cache's pages to the pool.
func (c *Cache) Free() {
	for _, pg := range c.pages {
		c.g.unref(pg)
	}
	c.pages, c.Len = nil, 0
}

// CopyPrefix makes c hold the first n positions of src (a shared prompt
// prefix; n is cut to src.Len), discarding what c held, as
// infer.KVCache.CopyPrefix. c shares src's pages for those positions (no
// device copy; a page is copied when either cache first writes into it
// while shared) and keeps its own pages past them as spare capacity.
func (c *Cache) CopyPrefix(src *Cache, n int) error {
	if src == nil || src.g != c.g {
		return errors.New("cuda: copy prefix: the source cache belongs to another model")
	}
	n = min(n, src.Len)
	if src == c {
		c.Truncate(n)
		return nil
	}
	c.Len = 0
	if n <= 0 {
		return nil
	}
	np := pagesFor(n)
	if len(src.pages) < np {
		return errors.New("cuda: copy prefix: the source cache was freed")
	}
	for i := range np {
		c.g.kv.refs[src.pages[i]]++
		if i < len(c.pages) {
			c.g.unref(c.pages[i])
			c.pages[i] = src.pages[i]
		} else {
			c.pages = append(c.pages, src.pages[i])
		}
	}
	c.Len = n
	return nil
}
