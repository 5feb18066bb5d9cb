// Package sqlkv is a third-party module with cgo of its own: a tiny key-value store on the
// system's libsqlite3. Its cgo calls name SQLite's functions directly, so the binary
// imports them from libsqlite3.so.0 (what ties that library to this package).
package sqlkv

/*
#cgo LDFLAGS: -lsqlite3
#include <sqlite3.h>
#include <stdlib.h>
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Store is one open SQLite database with a table kv(k, v).
type Store struct {
	db *C.sqlite3
}

// Version is the version of the libsqlite3 the program runs with.
func Version() string {
	return C.GoString(C.sqlite3_libversion())
}

// Open opens (or creates) the database at path (":memory:" for none on disk).
func Open(path string) (*Store, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var db *C.sqlite3
	if rc := C.sqlite3_open(cpath, &db); rc != C.SQLITE_OK {
		return nil, fmt.Errorf("sqlite3_open %s: %s", path, C.GoString(C.sqlite3_errstr(rc)))
	}
	s := &Store{db}
	if err := s.exec("CREATE TABLE IF NOT EXISTS kv(k TEXT PRIMARY KEY, v TEXT)"); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Put stores v under k (keys and values must not contain quotes: a sample, not a library).
func (s *Store) Put(k, v string) error {
	return s.exec(fmt.Sprintf("INSERT OR REPLACE INTO kv VALUES ('%s', '%s')", k, v))
}

// Count is the number of keys.
func (s *Store) Count() (int64, error) {
	csql := C.CString("SELECT count(*) FROM kv")
	defer C.free(unsafe.Pointer(csql))
	var st *C.sqlite3_stmt
	if rc := C.sqlite3_prepare_v2(s.db, csql, -1, &st, nil); rc != C.SQLITE_OK {
		return 0, fmt.Errorf("prepare: %s", C.GoString(C.sqlite3_errstr(rc)))
	}
	defer C.sqlite3_finalize(st)
	if C.sqlite3_step(st) != C.SQLITE_ROW {
		return 0, fmt.Errorf("count: no row")
	}
	return int64(C.sqlite3_column_int64(st, 0)), nil
}

// Close closes the database.
func (s *Store) Close() {
	C.sqlite3_close(s.db)
}

func (s *Store) exec(sql string) error {
	csql := C.CString(sql)
	defer C.free(unsafe.Pointer(csql))
	var errmsg *C.char
	if rc := C.sqlite3_exec(s.db, csql, nil, nil, &errmsg); rc != C.SQLITE_OK {
		defer C.sqlite3_free(unsafe.Pointer(errmsg))
		return fmt.Errorf("%s: %s", sql, C.GoString(errmsg))
	}
	return nil
}
