// callback: Go calls C, C calls back into Go, and both sides open a file.
//
// Hidden dependencies exercised: /etc/passwd opened by Go code running as a callback from C
// (its stack runs through runtime.cgocallback back to the Go code that made the C call),
// and /etc/group opened by the C function itself (on the g0 stack: the walk crosses from
// asmcgocall back to the goroutine). Both must name the call site in main.
package main

// int c_calls_go(void);
import "C"

import (
	"fmt"
	"os"
)

//export goCallback
func goCallback() {
	f, err := os.Open("/etc/passwd") // expect:callback-open
	if err != nil {
		fmt.Println("callback: open /etc/passwd:", err)
		return
	}
	f.Close()
	fmt.Println("callback: opened /etc/passwd")
}

func main() {
	ok := C.c_calls_go() // expect:c-calls-go
	fmt.Printf("c_calls_go: %d\n", int(ok))
}
