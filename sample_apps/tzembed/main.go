// tzembed: tzload with the time/tzdata package linked in (argv[1], default Europe/Paris).
//
// Hidden dependencies exercised: the same lookups as tzload ($ZONEINFO, then
// /usr/share/zoneinfo/<name> and the other system zoneinfo directories): the system files are
// still tried first, and the embedded copy is only the fallback, so on a full system tzembed
// touches exactly what tzload touches, while on a scratch image it still succeeds.
package main

import (
	"fmt"
	"os"
	"time"
	_ "time/tzdata"
)

func main() {
	name := "Europe/Paris"
	if len(os.Args) > 1 {
		name = os.Args[1]
	}
	loc, err := time.LoadLocation(name) // expect:loadlocation
	if err != nil {
		fmt.Println("LoadLocation:", err)
		os.Exit(1)
	}
	t := time.Date(2024, time.January, 15, 12, 0, 0, 0, time.UTC).In(loc)
	zone, offset := t.Zone()
	fmt.Printf("LoadLocation(%s): 2024-01-15T12:00Z is %s %s (UTC%+d)\n",
		name, t.Format("15:04"), zone, offset/3600)
}
