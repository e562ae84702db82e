//go:build cuda

package cuda

import "gorgonia.org/cu"

// prefixEntry is a group's most recent prompt (plus what was generated after
// it, when remembered at the end) and the cache that holds its keys and
// values.
type prefixEntry struct {
	group string
	fed   []int
	cache *Cache
}

// prefixStore keeps recent groups' caches for Generate, as infer.Runner
// does: across calls, so that a story's later turns reuse its prompt even
// when the caller (eval/coqa's Schedule) submits them in separate batches.
// A cache may be both an entry and the live cache of a running sequence; refs
// counts its holders and it is freed when none is left.
type prefixStore struct {
	entries []prefixEntry
	refs    map[*Cache]int
}

// prefixes returns g's store, creating it on first use.
func (g *Model) prefixes() *prefixStore {
	if g.prefix == nil {
		g.prefix = &prefixStore{refs: map[*Cache]int{}}
	}
	return g.prefix
}

// DropPrefixes frees the prompt prefixes Generate keeps between calls (at
// most 2 + MaxBatch/8 groups' caches). Call it before Close, or to give their
// memory back; it must not run during Generate.
func (g *Model) DropPrefixes() {
	ps := g.prefix
	g.prefix = nil
	if ps != nil {
		ps.clear()
	}
}

// PrefixBytes is the device memory of the kept prefixes' pages (a page
// shared by several counted once).
func (g *Model) PrefixBytes() int64 {
	ps := g.prefix
	if ps == nil || g.kv == nil {
		return 0
	}
	pages := map[cu.DevicePtr]bool{}
	for _, e := range ps.entries {
		for _, pg := range e.cache.pages {
			pages[pg] = true
		}
	}
	return int64(len(pages)) * g.kv.pageBytes
}

func (ps *prefixStore) acquire(c *Cache) { ps.refs[c]++ }

// release drops one hold on c and frees it when it was the last.
func (ps *prefixStore) release(c *Cache) {
	if ps.refs[c]--; ps.refs[c] > 0 {
		return
	}
	delete(ps.refs, c)
	c.Free() // a page's later user is queued after any reader of it
}

func (ps *prefixStore) evict(i int) {
	e := ps.entries[i]
	ps.entries = append(ps.entries[:i], ps.entries[i+1:]...)
	ps.release(e.cache)
}

// find returns group's entry, or nil.
func (ps *prefixStore) find(group string) *prefixEntry {
	for i := range ps.entries {
		if ps.entries[i].group == group {
			return &ps.entries[i]
		}
	}
	return nil
}

// remember makes (fed, cache) group's entry, replacing its previous one,
// and keeps the most recent keep entries.
func (ps *prefixStore) remember(group string, fed []int, cache *Cache, keep int) {
	ps.acquire(cache) // before the old entry's release: it may be the same cache
	for i, e := range ps.entries {
		if e.group == group {
			ps.evict(i)
			break
		}
	}
	ps.entries = append(ps.entries, prefixEntry{group, fed, cache})
	for len(ps.entries) > max(keep, 0) {
		ps.evict(0)
	}
}

// clear frees every entry (e.g. when memory runs out).
func (ps *prefixStore) clear() {
	for len(ps.entries) > 0 {
		ps.evict(0)
	}
}
