//go:build cgo

package main

/*
static void cgotrace_segv(void) {
	volatile int *p = 0;
	*p = 42;
}
*/
import "C"

// cSegv writes through a NULL pointer in C; it does not return.
func cSegv() bool {
	C.cgotrace_segv() // expect:crash-csegv
	return true
}
