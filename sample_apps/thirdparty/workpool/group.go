// Package workpool stands for third-party code in the inventory sample: an errgroup-like
// Group, and helpers that run user, DNS and time-zone lookups on a goroutine of their own,
// on the caller's behalf. The inventory module pulls it in with a go.mod `replace`.
package workpool

import "sync"

// Group runs functions on goroutines of their own and waits for them, like errgroup.
type Group struct {
	wg   sync.WaitGroup
	once sync.Once
	err  error
}

// Go runs f on a new goroutine.
func (g *Group) Go(f func() error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := f(); err != nil {
			g.once.Do(func() { g.err = err })
		}
	}()
}

// Wait waits for every function started by Go and returns the first error.
func (g *Group) Wait() error {
	g.wg.Wait()
	return g.err
}
