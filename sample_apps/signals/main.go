// signals: a process that waits in a loop, for SIGSTOP/SIGCONT/SIGTERM handling in tracers.
//
// Hidden dependencies exercised: none on purpose. It prints "tick N" every 100 ms (so a
// stopped process is visible as a gap), exits 0 on SIGTERM or SIGINT and reports
// "signals: got terminated". --ready-file PATH (a FIFO made by the test) receives
// "ready <pid>\n" once the handler is installed. --timeout bounds its life (default 120 s;
// exit 3 when no signal came).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	readyFile := flag.String("ready-file", "", "write \"ready <pid>\" to this path (FIFO)")
	timeout := flag.Duration("timeout", 120*time.Second, "exit 3 after this long")
	flag.Parse()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	fmt.Printf("signals: pid %d waiting for SIGTERM\n", os.Getpid())
	if *readyFile != "" {
		msg := []byte(fmt.Sprintf("ready %d\n", os.Getpid()))
		if err := os.WriteFile(*readyFile, msg, 0o600); err != nil {
			fmt.Println("ready-file:", err)
			os.Exit(1)
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	end := time.After(*timeout)
	for n := 1; ; n++ {
		select {
		case s := <-sigs:
			fmt.Println("signals: got", s)
			return
		case <-tick.C:
			fmt.Println("tick", n)
		case <-end:
			fmt.Println("signals: timed out without SIGTERM")
			os.Exit(3)
		}
	}
}
