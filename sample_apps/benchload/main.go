// benchload: a loopback HTTP backend and a load generator, for bench's reverse-proxy row
// (bench/__main__.py, part attach: Debian's caddy proxying to the backend under load).
//
// Hidden dependencies exercised: none on purpose (it is the harness, not the traced program):
// one connect(2) to 127.0.0.1 per request of the load generator, nothing else.
//
// Usage: benchload serve              listen on 127.0.0.1:0, print "benchload: listening on
//
//	ADDR", answer every request "ok\n" until SIGTERM (then exit 0)
//	benchload load URL SECONDS [N]  N (4) clients, each a GET of URL on a new connection
//	                                (no keep-alive) after another, for SECONDS; prints
//	                                "benchload: R requests in S s, T req/s, E errors"
//	benchload -demo SECONDS         serve and load itself for SECONDS (a self-test)
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	switch {
	case len(os.Args) == 2 && os.Args[1] == "serve":
		ln := listen()
		fmt.Println("benchload: listening on", ln.Addr())
		go serve(ln)
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
		<-stop
	case (len(os.Args) == 4 || len(os.Args) == 5) && os.Args[1] == "load":
		window := seconds(os.Args[3])
		clients := 4
		if len(os.Args) == 5 {
			n, err := strconv.Atoi(os.Args[4])
			if err != nil || n < 1 {
				usage()
			}
			clients = n
		}
		os.Exit(load(os.Args[2], window, clients))
	case len(os.Args) == 3 && os.Args[1] == "-demo":
		ln := listen()
		go serve(ln)
		os.Exit(load("http://"+ln.Addr().String()+"/", seconds(os.Args[2]), 4))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchload serve | load URL SECONDS [CLIENTS] | -demo SECONDS")
	os.Exit(2)
}

func seconds(s string) time.Duration {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 {
		usage()
	}
	return time.Duration(f * float64(time.Second))
}

func listen() net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchload: listen:", err)
		os.Exit(1)
	}
	return ln
}

func serve(ln net.Listener) {
	body := []byte("ok\n")
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	}))
}

// load runs `clients` goroutines, each sending one request after another on a new
// connection, until `window` has passed; the rate counts the requests that got "ok\n".
func load(url string, window time.Duration, clients int) int {
	client := &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		Timeout:   30 * time.Second,
	}
	var done, failed atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(t0) < window {
				if get(client, url) {
					done.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0).Seconds()
	fmt.Printf("benchload: %d requests in %.3f s, %.1f req/s, %d errors\n",
		done.Load(), elapsed, float64(done.Load())/elapsed, failed.Load())
	if done.Load() == 0 {
		return 1
	}
	return 0
}

func get(client *http.Client, url string) bool {
	resp, err := client.Get(url) // expect:benchload-get
	if err != nil {
		return false
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return err == nil && string(b) == "ok\n"
}
