/*
 * maildir-mda MAILDIR: the smallest durable Maildir delivery agent, for chasquid's
 * mail_delivery_agent_bin in the benchmark.
 *
 * chasquid delivers locally by running one MDA process per message (its real architecture);
 * this one does what tambo's Maildir courier does and nothing else, so the comparison measures
 * the servers, not a slow MDA: stdin -> MAILDIR/tmp/<unique>, fsync, rename into new/, fsync new/.
 * Exit 75 (EX_TEMPFAIL) on any error, so chasquid retries instead of dropping the message.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define EX_TEMPFAIL 75

/* mkdir -p: chasquid creates nothing for the MDA. */
static int mkdirs(const char *path) {
	char buf[4096];
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof buf) return -1;
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] == '/' || buf[i] == '\0') {
			char c = buf[i];
			buf[i] = '\0';
			if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
			buf[i] = c;
		}
	}
	return 0;
}

static int write_all(int fd, const char *p, ssize_t n) {
	while (n > 0) {
		ssize_t w = write(fd, p, (size_t)n);
		if (w < 0) {
			if (errno == EINTR) continue;
			return -1;
		}
		p += w;
		n -= w;
	}
	return 0;
}

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: maildir-mda MAILDIR\n");
		return 64;
	}
	char tmpdir[4096], newdir[4096], tmp[4200], dst[4200];
	snprintf(tmpdir, sizeof tmpdir, "%s/tmp", argv[1]);
	snprintf(newdir, sizeof newdir, "%s/new", argv[1]);
	if (mkdirs(tmpdir) != 0 || mkdirs(newdir) != 0) return EX_TEMPFAIL;

	struct timeval tv;
	gettimeofday(&tv, NULL);
	char name[128];
	snprintf(name, sizeof name, "%ld.M%06ldP%d.bench", (long)tv.tv_sec, (long)tv.tv_usec,
	         (int)getpid());
	snprintf(tmp, sizeof tmp, "%s/%s", tmpdir, name);
	snprintf(dst, sizeof dst, "%s/%s", newdir, name);

	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0) return EX_TEMPFAIL;
	char buf[65536];
	for (;;) {
		ssize_t r = read(0, buf, sizeof buf);
		if (r == 0) break;
		if (r < 0) {
			if (errno == EINTR) continue;
			goto fail;
		}
		if (write_all(fd, buf, r) != 0) goto fail;
	}
	if (fsync(fd) != 0 || close(fd) != 0) {
		unlink(tmp);
		return EX_TEMPFAIL;
	}
	if (rename(tmp, dst) != 0) {
		unlink(tmp);
		return EX_TEMPFAIL;
	}
	int dfd = open(newdir, O_RDONLY | O_DIRECTORY);
	if (dfd < 0 || fsync(dfd) != 0) return EX_TEMPFAIL;
	close(dfd);
	return 0;

fail:
	close(fd);
	unlink(tmp);
	return EX_TEMPFAIL;
}
