// benchwalk: generates a tree of N small files under DIR once, then walks it, stats and reads every file (bench workload, a real program's file walk).
//
// Hidden dependencies exercised: none; each file is stat'ed and opened once per run, so
// every watched call is the first sighting of its path (what a site generator or a build
// tool does). Usage: benchwalk [N [DIR]] (default 3000 files in ./benchwalk-tree).
package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

func generate(dir string, n int) error {
	stamp := filepath.Join(dir, ".complete")
	if data, err := os.ReadFile(stamp); err == nil && string(data) == strconv.Itoa(n) {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("section-%02d", i%50), fmt.Sprintf("part-%02d", (i/50)%20))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		body := fmt.Sprintf("---\ntitle: page %d\n---\n%s\n", i, "content line\n")
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("page-%05d.md", i)), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(stamp, []byte(strconv.Itoa(n)), 0o644)
}

func main() {
	n, dir := 3000, "benchwalk-tree"
	if len(os.Args) > 1 {
		v, err := strconv.Atoi(os.Args[1])
		if err != nil || v < 1 {
			fmt.Println("usage: benchwalk [N [DIR]]")
			os.Exit(2)
		}
		n = v
	}
	if len(os.Args) > 2 {
		dir = os.Args[2]
	}
	if err := generate(dir, n); err != nil {
		fmt.Println("benchwalk: generate:", err)
		os.Exit(1)
	}
	t0 := time.Now()
	files, total := 0, 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".md" {
			return err
		}
		if _, err := os.Stat(path); err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		total += len(data)
		return nil
	})
	if err != nil {
		fmt.Println("benchwalk: walk:", err)
		os.Exit(1)
	}
	fmt.Printf("benchwalk: %d files, %d bytes in %.3f s\n", files, total, time.Since(t0).Seconds())
}
