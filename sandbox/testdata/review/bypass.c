/* bypass: a job that got past the stub (run unpatched through the real launcher). It reads
 * a mode and arguments from stdin and prints "key: value" lines saying what it reached. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <poll.h>
#include <unistd.h>
#include <linux/netlink.h>

static const char *res(long r) { return r < 0 ? strerror(errno) : "ok"; }

static void unixconn(const char *key, const char *path, int abstract)
{
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	socklen_t len;
	if (abstract) {
		strncpy(a.sun_path + 1, path, sizeof a.sun_path - 2);
		len = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(path);
	} else {
		strncpy(a.sun_path, path, sizeof a.sun_path - 1);
		len = sizeof a;
	}
	long r = connect(s, (struct sockaddr *)&a, len);
	printf("%s: %s\n", key, res(r));
	if (r == 0)
		write(s, "ESCAPED", 7);
	close(s);
}

int main(void)
{
	char mode[64] = "", arg[256] = "";
	long n = 0;
	if (scanf("%63s", mode) != 1)
		return 2;
	if (!strcmp(mode, "files")) {
		while (scanf("%255s", arg) == 1) {
			int fd = open(arg, O_RDONLY);
			char buf[64] = "";
			if (fd >= 0) {
				ssize_t k = read(fd, buf, sizeof buf - 1);
				if (k < 0) k = 0;
				buf[k] = 0;
				for (char *p = buf; *p; p++) if (*p == '\n' || *p < 32) *p = ' ';
				printf("open %s: ok %s\n", arg, buf);
			} else
				printf("open %s: %s\n", arg, strerror(errno));
		}
		printf("creat-tmp: %s\n", res(open("/tmp/review-fill", O_CREAT | O_WRONLY, 0644)));
		printf("creat-shm: %s\n", res(open("/dev/shm/review-fill", O_CREAT | O_WRONLY, 0644)));
	} else if (!strcmp(mode, "unix")) {
		scanf("%255s", arg);
		unixconn("unix", arg, 0);
	} else if (!strcmp(mode, "abstract")) {
		scanf("%255s", arg);
		unixconn("abstract", arg, 1);
	} else if (!strcmp(mode, "abslisten")) {
		scanf("%255s", arg);
		int s = socket(AF_UNIX, SOCK_STREAM, 0);
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		strncpy(a.sun_path + 1, arg, sizeof a.sun_path - 2);
		socklen_t len = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(arg);
		long r = bind(s, (struct sockaddr *)&a, len);
		printf("bind: %s\n", res(r));
		listen(s, 1);
		fflush(stdout);
		struct pollfd p = {.fd = s, .events = POLLIN};
		if (poll(&p, 1, 8000) == 1) {
			int c = accept(s, 0, 0);
			char buf[16] = "";
			read(c, buf, 7);
			printf("accepted: %s\n", buf);
		} else
			printf("accepted: none\n");
	} else if (!strcmp(mode, "net")) {
		int port = 0;
		scanf("%d", &port);
		int s = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		printf("tcp-loopback: %s\n", res(connect(s, (struct sockaddr *)&a, sizeof a)));
		s = socket(AF_INET, SOCK_DGRAM, 0);
		printf("udp-loopback: %s\n", res(sendto(s, "ESCAPED", 7, 0, (struct sockaddr *)&a, sizeof a)));
		struct sockaddr_in e = {.sin_family = AF_INET, .sin_port = htons(53)};
		inet_pton(AF_INET, "1.1.1.1", &e.sin_addr);
		printf("udp-external: %s\n", res(sendto(s, "x", 1, 0, (struct sockaddr *)&e, sizeof e)));
		s = socket(AF_INET, SOCK_STREAM, 0);
		printf("tcp-external: %s\n", res(connect(s, (struct sockaddr *)&e, sizeof e)));
		printf("raw: %s\n", res(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)));
		printf("packet: %s\n", res(socket(AF_PACKET, SOCK_RAW, 0)));
		int nl = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
		printf("netlink-route: %s\n", res(nl));
		int ue = socket(AF_NETLINK, SOCK_DGRAM, NETLINK_KOBJECT_UEVENT);
		struct sockaddr_nl snl = {.nl_family = AF_NETLINK, .nl_groups = 1};
		printf("netlink-uevent-bind: %s\n", res(ue < 0 ? ue : bind(ue, (struct sockaddr *)&snl, sizeof snl)));
		int au = socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT);
		printf("netlink-audit: %s\n", res(au));
	} else if (!strcmp(mode, "uevent")) {
		int ue = socket(AF_NETLINK, SOCK_DGRAM, NETLINK_KOBJECT_UEVENT);
		struct sockaddr_nl snl = {.nl_family = AF_NETLINK, .nl_groups = 1};
		printf("bind: %s\n", res(bind(ue, (struct sockaddr *)&snl, sizeof snl)));
		fflush(stdout);
		struct pollfd p = {.fd = ue, .events = POLLIN};
		char buf[512] = "";
		if (poll(&p, 1, 5000) == 1) {
			ssize_t k = recv(ue, buf, sizeof buf - 1, 0);
			if (k < 0) k = 0;
			buf[k] = 0;
			printf("uevent: %s\n", buf);
		} else
			printf("uevent: none\n");
	} else if (!strcmp(mode, "mem")) {
		scanf("%ld", &n);
		size_t sz = (size_t)n << 20;
		char *p = mmap(0, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			printf("mmap: %s\n", strerror(errno));
			return 0;
		}
		for (size_t i = 0; i < sz; i += 4096)
			p[i] = 1;
		printf("touched: %ld\n", n);
		struct rlimit rl;
		getrlimit(RLIMIT_AS, &rl);
		printf("rlimit-as: %lld\n", (long long)rl.rlim_cur);
		getrlimit(RLIMIT_CPU, &rl);
		printf("rlimit-cpu: %lld\n", (long long)rl.rlim_cur);
		getrlimit(RLIMIT_CORE, &rl);
		printf("rlimit-core: %lld\n", (long long)rl.rlim_cur);
		getrlimit(RLIMIT_NPROC, &rl);
		printf("rlimit-nproc: %lld\n", (long long)rl.rlim_cur);
	} else if (!strcmp(mode, "fork")) {
		scanf("%ld", &n);
		long made = 0;
		for (; made < n; made++) {
			pid_t p = fork();
			if (p < 0) {
				printf("fork-error: %s\n", strerror(errno));
				break;
			}
			if (p == 0) {
				pause();
				_exit(0);
			}
		}
		printf("forked: %ld\n", made);
	} else if (!strcmp(mode, "shm")) {
		int key = 0;
		scanf("%d %ld", &key, &n);
		int id = shmget(key, (size_t)n << 20, IPC_CREAT | 0666);
		printf("shmget: %s\n", res(id));
		if (id >= 0) {
			char *p = shmat(id, 0, 0);
			if (p != (void *)-1) {
				for (size_t i = 0; i < ((size_t)n << 20); i += 4096)
					p[i] = 1;
				strcpy(p, "job-was-here");
				printf("touched: %ld\n", n);
			}
		}
	} else if (!strcmp(mode, "shmread")) {
		int key = 0;
		scanf("%d", &key);
		int id = shmget(key, 0, 0);
		printf("shmget: %s\n", res(id));
		char *p = id < 0 ? (void *)-1 : shmat(id, 0, SHM_RDONLY);
		if (p != (void *)-1)
			printf("read: %.32s\n", p);
	} else if (!strcmp(mode, "keyadd")) {
		scanf("%255s", arg);
		long r = syscall(SYS_add_key, "user", "review", arg, strlen(arg), -4 /* KEY_SPEC_USER_KEYRING */);
		printf("add_key: %s\n", res(r));
	} else if (!strcmp(mode, "keyread")) {
		long id = syscall(SYS_keyctl, 10 /* KEYCTL_SEARCH */, -4, "user", "review", 0);
		printf("search: %s\n", res(id));
		if (id >= 0) {
			char buf[128] = "";
			long k = syscall(SYS_keyctl, 11 /* KEYCTL_READ */, id, buf, sizeof buf - 1);
			printf("read: %s\n", k < 0 ? strerror(errno) : buf);
		}
	} else if (!strcmp(mode, "keyclear")) {
		printf("clear: %s\n", res(syscall(SYS_keyctl, 7 /* KEYCTL_CLEAR */, -4)));
	} else if (!strcmp(mode, "mq")) {
		mqd_t q = mq_open("/review-mq", O_CREAT | O_RDWR, 0666, 0);
		printf("mq_open: %s\n", res(q));
	} else if (!strcmp(mode, "sched")) {
		printf("nice-5: %s\n", res(setpriority(PRIO_PROCESS, 0, -5)));
		struct sched_param sp = {.sched_priority = 1};
		printf("fifo: %s\n", res(sched_setscheduler(0, SCHED_FIFO, &sp)));
		printf("policy: %d\n", sched_getscheduler(0));
		printf("nice: %d\n", getpriority(PRIO_PROCESS, 0));
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(0, &set);
		printf("affinity: %s\n", res(sched_setaffinity(0, sizeof set, &set)));
	} else if (!strcmp(mode, "kern")) {
		char params[120] = {0};
		printf("io_uring: %s\n", res(syscall(425, 4, params)));
		printf("userfaultfd: %s\n", res(syscall(SYS_userfaultfd, 0)));
		printf("userfaultfd-user: %s\n", res(syscall(SYS_userfaultfd, 1 /* UFFD_USER_MODE_ONLY */)));
		char battr[128] = {0};
		battr[0] = 2; /* BPF_MAP_TYPE_ARRAY */
		*(int *)(battr + 4) = 4; *(int *)(battr + 8) = 4; *(int *)(battr + 12) = 1;
		printf("bpf: %s\n", res(syscall(SYS_bpf, 0, battr, 72)));
		char pattr[128] = {0};
		*(int *)(pattr + 0) = 1; /* PERF_TYPE_SOFTWARE */
		*(int *)(pattr + 4) = 128;
		printf("perf-self: %s\n", res(syscall(SYS_perf_event_open, pattr, 0, -1, -1, 0)));
		printf("perf-cpu: %s\n", res(syscall(SYS_perf_event_open, pattr, -1, 0, -1, 0)));
		pid_t c = fork();
		if (c == 0) {
			long r = unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET);
			printf("unshare-user: %s\n", res(r));
			if (r == 0) {
				printf("mount-tmpfs: %s\n", res(mount("none", "/tmp", "tmpfs", 0, 0)));
				printf("netlink-in-userns: %s\n", res(socket(AF_NETLINK, SOCK_RAW, 12 /* NETFILTER */)));
			}
			fflush(stdout);
			_exit(0);
		}
		waitpid(c, 0, 0);
		printf("pidfd-1: %s\n", res(syscall(SYS_pidfd_open, 1, 0)));
		printf("kill-1-outside: %s\n", res(kill(2, 0)));
	} else if (!strcmp(mode, "spin")) {
		for (volatile long i = 0;; i++)
			;
	} else if (!strcmp(mode, "segv")) {
		printf("dumpable: %d\n", (int)syscall(SYS_prctl, 3 /* PR_GET_DUMPABLE */, 0, 0, 0, 0));
		fflush(stdout);
		*(volatile int *)0 = 1;
	}
	return 0;
}
