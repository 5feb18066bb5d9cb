//go:build !cgo

package main

// cSegv reports that this build has no C code to crash in.
func cSegv() bool { return false }
