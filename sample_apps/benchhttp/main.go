// benchhttp: one process, an HTTP server on 127.0.0.1 and a client doing N requests over a
// keep-alive connection (bench workload, few watched syscalls: the tracer should cost ~0).
//
// Hidden dependencies exercised: one connect(2) to 127.0.0.1 (watched) and nothing else per
// request. Usage: benchhttp [N] (default 20000). With BENCHHTTP_WAIT=1 in the environment
// it prints "benchhttp: listening" and waits for a line on stdin before the timed loop, so a
// tracer can attach first (bench's attach row).
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	n := 20000
	if len(os.Args) > 1 {
		v, err := strconv.Atoi(os.Args[1])
		if err != nil || v < 1 {
			fmt.Println("usage: benchhttp [N]")
			os.Exit(2)
		}
		n = v
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("benchhttp: listen:", err)
		os.Exit(1)
	}
	body := []byte("ok\n")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	})}
	go srv.Serve(ln)
	defer srv.Close()

	if os.Getenv("BENCHHTTP_WAIT") == "1" {
		fmt.Println("benchhttp: listening")
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	url := "http://" + ln.Addr().String() + "/"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	t0 := time.Now()
	for i := 0; i < n; i++ {
		resp, err := client.Get(url) // expect:benchhttp-get
		if err != nil {
			fmt.Println("benchhttp: get:", err)
			os.Exit(1)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "ok\n" {
			fmt.Printf("benchhttp: bad response %q %v\n", b, err)
			os.Exit(1)
		}
	}
	fmt.Printf("benchhttp: %d requests in %.3f s\n", n, time.Since(t0).Seconds())
}
