// C side of the callback sample: calls back into Go, then opens a file itself.
#include <fcntl.h>
#include <unistd.h>
#include "_cgo_export.h"

int c_calls_go(void) {
	goCallback();
	int fd = open("/etc/group", O_RDONLY);
	if (fd < 0) {
		return 0;
	}
	close(fd);
	return 1;
}
