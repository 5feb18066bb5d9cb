// tzload: time.LoadLocation of a named zone (argv[1], default Europe/Paris).
//
// Hidden dependencies exercised: pure Go in every build mode: $ZONEINFO, then
// /usr/share/zoneinfo/<name> (seen as /usr/share/zoneinfo//Europe/Paris), the other system
// zoneinfo directories, then $GOROOT/lib/time/zoneinfo.zip. Fails with "unknown time zone"
// on images without tzdata (compare tzembed).
package main

import (
	"fmt"
	"os"
	"time"
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
