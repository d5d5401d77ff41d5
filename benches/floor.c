/*
 * floor ROOT MAILDIRS THREADS MESSAGES SIZE: the durable work of a delivery and nothing else,
 * to show what the disk and the kernel cost per message on the machine at hand (the bench
 * prints it beside the servers).
 *
 * Per message, as tambo's Maildir delivery does it (src/mailbox/deliver.rs): write SIZE bytes
 * to ROOT/<n>/tmp/<unique>, fsync the file, link it into ROOT/<n>/new/, unlink the tmp name,
 * then wait until an fsync of new/ that started after the link has completed. Messages go to
 * the MAILDIRS folders in turn, from THREADS threads at once (the sessions of the load).
 *
 * The folder fsync is shared as in src/fsutil/dir_sync.rs (fsync_dir_shared): one coalescer
 * per folder; a caller takes a ticket; when no fsync of that folder runs it leads one that
 * covers every ticket taken so far, otherwise it waits for the end of the running one and
 * looks again. Under load one fsync of new/ serves many deliveries.
 *
 * Prints one JSON object: messages, seconds, cpu_user_s, cpu_sys_s (the process, all
 * threads), file_fsyncs, dir_fsyncs. Exit 1 on any error.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct syncer {
	pthread_mutex_t lock;
	pthread_cond_t changed;
	unsigned long requested, completed, rounds;
	int running, fd, failed;
	char newdir[4096], tmpdir[4096];
};

static struct syncer *dirs;
static int ndirs, size;
static long messages;
static long next_message;
static pthread_mutex_t next_lock = PTHREAD_MUTEX_INITIALIZER;
static char *payload;

static void die(const char *what, const char *path) {
	fprintf(stderr, "floor: %s %s: %s\n", what, path, strerror(errno));
	exit(1);
}

/* fsync_dir_shared: returns once an fsync of the folder that started after this call has
 * completed; 0, or -1 when that fsync failed. */
static int fsync_dir_shared(struct syncer *s) {
	pthread_mutex_lock(&s->lock);
	unsigned long ticket = ++s->requested;
	while (s->completed < ticket) {
		if (s->running) {
			pthread_cond_wait(&s->changed, &s->lock);
			continue;
		}
		s->running = 1;
		unsigned long batch = s->requested;
		pthread_mutex_unlock(&s->lock);
		int r = fsync(s->fd);
		pthread_mutex_lock(&s->lock);
		s->running = 0;
		s->completed = batch;
		s->rounds++;
		if (r != 0) s->failed = 1;
		pthread_cond_broadcast(&s->changed);
	}
	int failed = s->failed;
	pthread_mutex_unlock(&s->lock);
	return failed ? -1 : 0;
}

static void deliver(long n) {
	struct syncer *s = &dirs[n % ndirs];
	char name[64], tmp[4200], dst[4200];
	snprintf(name, sizeof name, "%ld.M%ldP%d.floor", (long)time(NULL), n, (int)getpid());
	snprintf(tmp, sizeof tmp, "%s/%s", s->tmpdir, name);
	snprintf(dst, sizeof dst, "%s/%s", s->newdir, name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) die("open", tmp);
	for (int done = 0; done < size;) {
		ssize_t w = write(fd, payload + done, (size_t)(size - done));
		if (w < 0 && errno == EINTR) continue;
		if (w < 0) die("write", tmp);
		done += (int)w;
	}
	if (fsync(fd) != 0) die("fsync", tmp);
	if (close(fd) != 0) die("close", tmp);
	if (link(tmp, dst) != 0) die("link", dst);
	if (unlink(tmp) != 0) die("unlink", tmp);
	if (fsync_dir_shared(s) != 0) die("fsync", s->newdir);
}

static void *worker(void *arg) {
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&next_lock);
		long n = next_message < messages ? next_message++ : -1;
		pthread_mutex_unlock(&next_lock);
		if (n < 0) return NULL;
		deliver(n);
	}
}

static void mkdir_or_exists(const char *path) {
	if (mkdir(path, 0700) != 0 && errno != EEXIST) die("mkdir", path);
}

int main(int argc, char **argv) {
	if (argc != 6) {
		fprintf(stderr, "usage: floor ROOT MAILDIRS THREADS MESSAGES SIZE\n");
		return 64;
	}
	ndirs = atoi(argv[2]);
	int nthreads = atoi(argv[3]);
	messages = atol(argv[4]);
	size = atoi(argv[5]);
	if (ndirs < 1 || nthreads < 1 || messages < 1 || size < 0) {
		fprintf(stderr, "floor: MAILDIRS, THREADS and MESSAGES must be positive\n");
		return 64;
	}
	payload = malloc((size_t)size + 1);
	if (payload == NULL) die("malloc", "payload");
	for (int i = 0; i < size; i++) payload[i] = (i % 78 == 77) ? '\n' : 'a' + i % 26;

	mkdir_or_exists(argv[1]);
	dirs = calloc((size_t)ndirs, sizeof *dirs);
	if (dirs == NULL) die("calloc", "folders");
	for (int i = 0; i < ndirs; i++) {
		struct syncer *s = &dirs[i];
		char top[4000];
		snprintf(top, sizeof top, "%s/%d", argv[1], i);
		snprintf(s->tmpdir, sizeof s->tmpdir, "%s/tmp", top);
		snprintf(s->newdir, sizeof s->newdir, "%s/new", top);
		mkdir_or_exists(top);
		mkdir_or_exists(s->tmpdir);
		mkdir_or_exists(s->newdir);
		s->fd = open(s->newdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (s->fd < 0) die("open", s->newdir);
		pthread_mutex_init(&s->lock, NULL);
		pthread_cond_init(&s->changed, NULL);
	}

	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pthread_t *threads = calloc((size_t)nthreads, sizeof *threads);
	if (threads == NULL) die("calloc", "threads");
	for (int i = 0; i < nthreads; i++)
		if (pthread_create(&threads[i], NULL, worker, NULL) != 0) die("pthread_create", "");
	for (int i = 0; i < nthreads; i++) pthread_join(threads[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);

	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	unsigned long rounds = 0;
	for (int i = 0; i < ndirs; i++) rounds += dirs[i].rounds;
	printf("{\"messages\": %ld, \"seconds\": %.6f, \"cpu_user_s\": %.6f, \"cpu_sys_s\": %.6f, "
	       "\"file_fsyncs\": %ld, \"dir_fsyncs\": %lu}\n",
	       messages, (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
	       ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, messages, rounds);
	return 0;
}
