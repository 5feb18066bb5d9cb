// sitegen: a small static-site generator, the shape of hugo or jekyll on a real site.
//
// Hidden dependencies exercised: none on purpose. It reads config.toml, templates/page.html
// and every content/**/*.md under its working directory and writes public/**/*.html: the
// program's own files. A tracer must count them as program files (per directory), never
// list them one by one and never flag them as hidden.
//
// Usage: sitegen             build the site in the working directory
//
//	sitegen -init N    write a demo site with N pages into the working directory, then build
//	sitegen -demo N    the same in a fresh temporary directory, removed afterwards
package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

func main() {
	if len(os.Args) == 3 && (os.Args[1] == "-init" || os.Args[1] == "-demo") {
		n, err := strconv.Atoi(os.Args[2])
		if err != nil || n < 1 {
			usage()
		}
		if os.Args[1] == "-demo" {
			dir, err := os.MkdirTemp("", "sitegen-")
			check(err)
			defer os.RemoveAll(dir)
			check(os.Chdir(dir))
		}
		check(writeDemo(n))
	} else if len(os.Args) != 1 {
		usage()
	}
	pages, bytes, err := build()
	check(err)
	fmt.Printf("sitegen: %d pages, %d bytes\n", pages, bytes)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: sitegen [-init N | -demo N]")
	os.Exit(2)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "sitegen:", err)
		os.Exit(1)
	}
}

// writeDemo lays out config.toml, templates/page.html and n pages in sections of ten.
func writeDemo(n int) error {
	files := map[string]string{
		"config.toml":         "title = \"Demo\"\n",
		"templates/page.html": "<html><title>{{site}}: {{title}}</title><body>{{body}}</body></html>\n",
	}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("content/section-%02d/page-%03d.md", i/10, i)
		files[name] = fmt.Sprintf("# Page %d\n\nSome text for page %d.\n", i, i)
	}
	for name, text := range files {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// build renders every content/**/*.md through the page template into public/.
func build() (int, int, error) {
	config, err := os.ReadFile("config.toml")
	if err != nil {
		return 0, 0, err
	}
	site := strings.Trim(strings.TrimPrefix(strings.TrimSpace(string(config)), "title = "), "\"")
	tmpl, err := os.ReadFile("templates/page.html") // expect:template
	if err != nil {
		return 0, 0, err
	}
	pages, total := 0, 0
	err = filepath.WalkDir("content", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".md") {
			return err
		}
		src, err := os.ReadFile(path) // expect:page
		if err != nil {
			return err
		}
		title, body, _ := strings.Cut(string(src), "\n")
		out := strings.NewReplacer("{{site}}", site, "{{title}}", strings.TrimPrefix(title, "# "),
			"{{body}}", strings.TrimSpace(body)).Replace(string(tmpl))
		dest := filepath.Join("public", strings.TrimSuffix(strings.TrimPrefix(path, "content/"), ".md")+".html")
		if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
			return err
		}
		pages++
		total += len(out)
		return os.WriteFile(dest, []byte(out), 0o644)
	})
	return pages, total, err
}
