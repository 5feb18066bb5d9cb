// sqlite: cgo linked against Debian's libsqlite3 (a C dependency of the program itself).
//
// Hidden dependencies exercised: DT_NEEDED libsqlite3.so.0 in the dynamic modes (readelf
// shows that one; static modes link Debian's libsqlite3.a instead), and what readelf cannot
// show: opening even an in-memory database reads /dev/urandom (seen with strace on Debian
// 12's sqlite 3.40.1). The program's own C code makes every cgo mode link externally, so
// its C frames carry CFI. One in-memory database, one table, one query. musl cannot link
// Debian's glibc-built libsqlite3: the musl mode is not offered (app.toml).
package main

/*
#cgo LDFLAGS: -lsqlite3 -lm
#include <sqlite3.h>
#include <stdlib.h>

// cgotrace_sum runs the whole session in C so Go needs no callbacks; returns 0 or an error.
static int cgotrace_sum(long long *out, const char **errmsg) {
	sqlite3 *db;
	sqlite3_stmt *st;
	int rc = sqlite3_open(":memory:", &db);
	if (rc != SQLITE_OK) { *errmsg = sqlite3_errstr(rc); return rc; }
	rc = sqlite3_exec(db, "CREATE TABLE t(v INTEGER); INSERT INTO t VALUES (1),(2),(3);",
	                  0, 0, 0);
	if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(db, "SELECT sum(v) FROM t", -1, &st, 0);
	if (rc == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW) *out = sqlite3_column_int64(st, 0);
		else rc = SQLITE_ERROR;
		sqlite3_finalize(st);
	}
	if (rc != SQLITE_OK) *errmsg = sqlite3_errstr(rc);
	sqlite3_close(db);
	return rc;
}
*/
import "C"

import (
	"fmt"
	"os"
)

func main() {
	var sum C.longlong
	var errmsg *C.char
	if rc := C.cgotrace_sum(&sum, &errmsg); rc != 0 { // expect:sqlite-query
		fmt.Printf("sqlite %s: error %d: %s\n", C.GoString(C.sqlite3_libversion()), rc,
			C.GoString(errmsg))
		os.Exit(1)
	}
	fmt.Printf("sqlite %s: SELECT sum(v) = %d\n", C.GoString(C.sqlite3_libversion()), sum)
}
