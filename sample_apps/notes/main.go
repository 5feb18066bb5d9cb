// notes: a program whose SQLite comes from a third-party module with cgo of its own
// (vendor.test/sqlkv, `thirdparty/sqlkv`, pulled in by a go.mod `replace`).
//
// Hidden dependencies exercised: DT_NEEDED libsqlite3.so.0, linked by vendor.test/sqlkv, not
// by the program's own code (readelf shows the library, not who needs it); SQLite reads
// /dev/urandom when it opens a database. One in-memory database, three notes, one count.
package main

import (
	"fmt"
	"os"

	"vendor.test/sqlkv"
)

func main() {
	store, err := sqlkv.Open(":memory:") // expect:open
	if err != nil {
		fmt.Println("notes:", err)
		os.Exit(1)
	}
	defer store.Close()
	for i, text := range []string{"buy milk", "call home", "ship it"} {
		if err := store.Put(fmt.Sprint(i), text); err != nil {
			fmt.Println("notes:", err)
			os.Exit(1)
		}
	}
	n, err := store.Count()
	if err != nil {
		fmt.Println("notes:", err)
		os.Exit(1)
	}
	fmt.Printf("notes: sqlite %s, %d notes\n", sqlkv.Version(), n)
}
