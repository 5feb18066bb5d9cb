// dlopen: a cgo program that loads a shared library at run time and calls one symbol.
//
// Hidden dependencies exercised: dlopen(argv[1], default libz.so.1) reads /etc/ld.so.cache
// and opens the library (and its own DT_NEEDED libraries); none of them appears in this
// binary's DT_NEEDED, so readelf/ldd cannot see it. The symbol (argv[2], default zlibVersion)
// must be a function without arguments returning a C string (zlibVersion,
// sqlite3_libversion, gnu_get_libc_version ...). Static musl cannot dlopen at all, so the
// musl mode is not offered (app.toml).
package main

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

typedef const char *(*cgotrace_strfn)(void);

static void *cgotrace_open(const char *lib) { return dlopen(lib, RTLD_NOW | RTLD_LOCAL); }
static const char *cgotrace_call(void *fn) { return ((cgotrace_strfn)fn)(); }
static const char *cgotrace_error(void) {
	const char *e = dlerror();
	return e ? e : "unknown dlopen error";
}
*/
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"
)

func init() {
	// dlerror() is per thread and each C call may run on another OS thread: keep main on
	// one thread so a failed dlopen's message is still there when cgotrace_error asks.
	runtime.LockOSThread()
}

func main() {
	lib, sym := "libz.so.1", "zlibVersion"
	if len(os.Args) > 1 {
		lib = os.Args[1]
	}
	if len(os.Args) > 2 {
		sym = os.Args[2]
	}
	clib, csym := C.CString(lib), C.CString(sym)
	defer C.free(unsafe.Pointer(clib))
	defer C.free(unsafe.Pointer(csym))

	handle := C.cgotrace_open(clib) // expect:dlopen
	if handle == nil {
		fmt.Printf("dlopen(%s): %s\n", lib, C.GoString(C.cgotrace_error()))
		os.Exit(1)
	}
	fn := C.dlsym(handle, csym)
	if fn == nil {
		fmt.Printf("dlsym(%s): %s\n", sym, C.GoString(C.cgotrace_error()))
		os.Exit(1)
	}
	fmt.Printf("dlopen(%s) %s() = %s\n", lib, sym, C.GoString(C.cgotrace_call(fn)))
}
