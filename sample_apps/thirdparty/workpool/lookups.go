package workpool

import (
	"context"
	"net"
	"os/user"
	"time"
)

// LookupUser looks the user with id uid up on a worker goroutine.
func LookupUser(uid string) (*user.User, error) {
	var g Group
	var u *user.User
	g.Go(func() (err error) {
		u, err = user.LookupId(uid)
		return err
	})
	return u, g.Wait()
}

// ResolveHost resolves name on a worker goroutine, within timeout.
func ResolveHost(name string, timeout time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var g Group
	var addrs []string
	g.Go(func() (err error) {
		addrs, err = net.DefaultResolver.LookupHost(ctx, name)
		return err
	})
	return addrs, g.Wait()
}

// LoadZone loads the time zone name on a worker goroutine.
func LoadZone(name string) (*time.Location, error) {
	var g Group
	var loc *time.Location
	g.Go(func() (err error) {
		loc, err = time.LoadLocation(name)
		return err
	})
	return loc, g.Wait()
}
