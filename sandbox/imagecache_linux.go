package sandbox

import (
	"crypto/sha256"
	"os"
	"sync"

	"github.com/gridnode/gridnode/cids"
)

// Prepared images are kept for reuse: a worker runs the same binary under the same limits
// again and again (replicas of a batch, the inputs of one job), and validating, patching,
// writing, sealing and reading back the image was about a third of a tiny job's cost in
// the sandbox. A sealed memfd cannot change (F_SEAL_WRITE, _GROW, _SHRINK, _SEAL), so the
// image the kernel execs the hundredth time is the one that was checked the first time.
// The cache holds at most imageCacheMax images and imageCacheBytes of them, none above
// imageCacheLarge; an image in
// use is never closed, and one that no run holds is evicted least recently used first.
const (
	imageCacheMax   = 8
	imageCacheBytes = 32 << 20
	// imageCacheLarge: a larger binary is not kept. Its image costs more memory than it
	// saves time (hashing it for the key costs about as much as preparing it), and it
	// would sit outside the slots' memory bound.
	imageCacheLarge = 4 << 20
)

// imageKey names a prepared image: the binary's SHA-256 and the limits the stub and the
// validator use (the wall limit and the output limit are enforced by the launcher, not
// written into the image).
type imageKey struct {
	sum [sha256.Size]byte
	lim Limits
}

func keyOf(job Job, lim Limits) imageKey {
	// The stub sets RLIMIT_CPU in whole seconds: limits a millisecond apart are one image,
	// not one each for a peer that varies them to churn the cache.
	lim.Wall, lim.MaxOutput, lim.CPU = 0, 0, cpuLimit(lim)
	sum, ok := cids.Digest(job.CID)
	if !ok {
		sum = sha256.Sum256(job.Binary)
	}
	return imageKey{sum: sum, lim: lim}
}

// image is a sealed, checked memfd and the runs holding it.
type image struct {
	f    *os.File
	size int64
	refs int    // runs holding it
	used uint64 // the cache's clock at the last use
}

// imageCache is the Runner's prepared images; its zero value is ready.
type imageCache struct {
	mu    sync.Mutex
	m     map[imageKey]*image
	clock uint64
	bytes int64
}

// get returns the image of job's binary under lim, made by prepare if it is not held, and a
// release to call once the run is over. An error of prepare (a refused binary among them)
// is returned as it is and nothing is kept. The hold is taken under the lock that eviction
// takes, so an image handed out is never one being closed.
func (c *imageCache) get(job Job, lim Limits, prepare func() (*os.File, error)) (*os.File, func(), error) {
	if len(job.Binary) > imageCacheLarge {
		f, err := prepare()
		if err != nil {
			return nil, nil, err
		}
		return f, sync.OnceFunc(func() { f.Close() }), nil
	}
	k := keyOf(job, lim)
	c.mu.Lock()
	if img := c.m[k]; img != nil {
		defer c.mu.Unlock()
		return c.hold(img)
	}
	c.mu.Unlock()
	f, err := prepare()
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[imageKey]*image)
	}
	if old := c.m[k]; old != nil { // another run prepared it meanwhile: use that one
		f.Close()
		return c.hold(old)
	}
	img := &image{f: f, size: fi.Size()}
	c.m[k] = img
	c.bytes += img.size
	return c.hold(img)
}

// hold takes a hold on img, which is in the cache, and evicts what is over the bounds.
// Preconditions: c.mu is held.
func (c *imageCache) hold(img *image) (*os.File, func(), error) {
	img.refs++
	c.clock++
	img.used = c.clock
	c.evict()
	return img.f, sync.OnceFunc(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		img.refs--
		c.evict()
	}), nil
}

// evict drops the least recently used images no run holds while the cache is over its
// bounds. Images in use stay, so the bounds may be exceeded by as many images as there
// are runs, which the worker's slots bound. Preconditions: c.mu is held.
func (c *imageCache) evict() {
	for len(c.m) > imageCacheMax || c.bytes > imageCacheBytes {
		var lk imageKey
		var lru *image
		for k, v := range c.m {
			if v.refs == 0 && (lru == nil || v.used < lru.used) {
				lk, lru = k, v
			}
		}
		if lru == nil {
			return
		}
		delete(c.m, lk)
		c.bytes -= lru.size
		lru.f.Close()
	}
}
