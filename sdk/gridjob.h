/*
 * gridjob.h: the gridnode job SDK, a single header for freestanding static x86-64 jobs.
 *
 * A job reads stdin, writes stdout and exits. Under the gridnode sandbox
 * (SECCOMP_MODE_STRICT) read, write and exit are the only system calls it may make;
 * anything else, including exit_group, mmap and brk, gets it killed. It has no clock,
 * no files, no network and no environment.
 *
 * Write `int main(void)` and return the exit status (0..255). Include this header in
 * exactly one translation unit: it defines _start, memcpy, memset, memmove, memcmp
 * and the arena. Build:
 *
 *   cc -static -nostdlib -ffreestanding -fno-stack-protector -fno-pie -no-pie \
 *      -Wl,-z,noexecstack -O2 -o job job.c
 *
 * Define GJ_ARENA_SIZE (bytes) before including to change the size of the gj_alloc
 * arena; the default is 16 MiB. The arena is .bss, so it counts towards the job's
 * memory limit whether it is used or not.
 */
#ifndef GRIDJOB_H
#define GRIDJOB_H

#include <stddef.h>
#include <stdint.h>

#if !defined(__x86_64__)
#error "gridjob.h supports x86-64 only"
#endif

#ifndef GJ_ARENA_SIZE
#define GJ_ARENA_SIZE (16u << 20)
#endif

#define GJ_SYS_READ 0
#define GJ_SYS_WRITE 1
#define GJ_SYS_EXIT 60

int main(void);

/* ---- raw system calls ------------------------------------------------------------ */

/* gj_syscall makes a raw system call and returns the kernel's result (-errno on
 * failure). In the sandbox only GJ_SYS_READ, GJ_SYS_WRITE and GJ_SYS_EXIT are allowed;
 * any other number kills the job. */
static inline long gj_syscall(long n, long a1, long a2, long a3, long a4, long a5, long a6)
{
	long ret;
	register long r10 __asm__("r10") = a4;
	register long r8 __asm__("r8") = a5;
	register long r9 __asm__("r9") = a6;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

/* gj_read reads up to n bytes from fd; it returns the count, 0 at EOF or -errno. */
static inline long gj_read(int fd, void *buf, size_t n)
{
	return gj_syscall(GJ_SYS_READ, fd, (long)buf, (long)n, 0, 0, 0);
}

/* gj_write writes up to n bytes to fd; it returns the count or -errno. */
static inline long gj_write(int fd, const void *buf, size_t n)
{
	return gj_syscall(GJ_SYS_WRITE, fd, (long)buf, (long)n, 0, 0, 0);
}

/* gj_exit ends the job with status code & 0xff. It is SYS_exit (60), not exit_group,
 * which strict mode forbids; jobs have a single thread, so the two are the same. */
static inline __attribute__((noreturn)) void gj_exit(int code)
{
	for (;;)
		gj_syscall(GJ_SYS_EXIT, code, 0, 0, 0, 0, 0);
}

/* ---- I/O helpers ----------------------------------------------------------------- */

/* gj_read_full reads until n bytes have arrived or EOF. It returns the number of bytes
 * read (less than n only at EOF) or -errno. */
static inline long gj_read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		long r = gj_read(fd, (char *)buf + got, n - got);
		if (r < 0)
			return r;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (long)got;
}

/* gj_write_all writes all n bytes. It returns 0 or -errno. */
static inline long gj_write_all(int fd, const void *buf, size_t n)
{
	const char *p = (const char *)buf;
	while (n > 0) {
		long r = gj_write(fd, p, n);
		if (r < 0)
			return r;
		if (r == 0)
			return -5; /* -EIO: no progress */
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static inline size_t gj_strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

/* gj_puts writes a NUL-terminated string to stdout (no newline added). */
static inline long gj_puts(const char *s)
{
	return gj_write_all(1, s, gj_strlen(s));
}

/* gj_fail writes "job: msg\n" to stderr and exits with status 1. */
static inline __attribute__((noreturn)) void gj_fail(const char *msg)
{
	gj_write_all(2, "job: ", 5);
	gj_write_all(2, msg, gj_strlen(msg));
	gj_write_all(2, "\n", 1);
	gj_exit(1);
}

/* ---- formatting ------------------------------------------------------------------ */

/* gj_fmt_u64 writes v in decimal to buf (at least 20 bytes, no NUL) and returns the
 * length. */
static inline size_t gj_fmt_u64(char *buf, uint64_t v)
{
	char tmp[20];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	return n;
}

/* gj_fmt_i64 writes v in decimal to buf (at least 20 bytes, no NUL) and returns the
 * length. */
static inline size_t gj_fmt_i64(char *buf, int64_t v)
{
	if (v >= 0)
		return gj_fmt_u64(buf, (uint64_t)v);
	buf[0] = '-';
	return 1 + gj_fmt_u64(buf + 1, -(uint64_t)v);
}

/* gj_fmt_hex writes v in lowercase hex without leading zeros to buf (at least 16 bytes,
 * no NUL) and returns the length. */
static inline size_t gj_fmt_hex(char *buf, uint64_t v)
{
	static const char digits[] = "0123456789abcdef";
	char tmp[16];
	size_t n = 0;
	do {
		tmp[n++] = digits[v & 15];
		v >>= 4;
	} while (v);
	for (size_t i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	return n;
}

/* gj_hex_encode writes the 2*n lowercase hex digits of src[0..n) to dst (no NUL). */
static inline void gj_hex_encode(char *dst, const void *src, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)src;
	for (size_t i = 0; i < n; i++) {
		dst[2 * i] = digits[s[i] >> 4];
		dst[2 * i + 1] = digits[s[i] & 15];
	}
}

/* gj_print_u64 writes v in decimal followed by a newline to stdout. */
static inline long gj_print_u64(uint64_t v)
{
	char buf[21];
	size_t n = gj_fmt_u64(buf, v);
	buf[n++] = '\n';
	return gj_write_all(1, buf, n);
}

/* gj_parse_u64 skips leading ASCII white space in s[0..n), then parses decimal digits
 * into *out (wrapping on overflow). It returns the number of bytes consumed, or 0 when
 * no digit follows the white space. */
static inline size_t gj_parse_u64(const char *s, size_t n, uint64_t *out)
{
	size_t i = 0;
	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' ||
			 s[i] == '\v' || s[i] == '\f'))
		i++;
	size_t start = i;
	uint64_t v = 0;
	while (i < n && s[i] >= '0' && s[i] <= '9')
		v = v * 10 + (uint64_t)(s[i++] - '0');
	if (i == start)
		return 0;
	*out = v;
	return i;
}

/* ---- memory ---------------------------------------------------------------------- */

/* gcc emits calls to these even with -ffreestanding, so they must exist under their
 * standard names. Weak, so a job may supply its own. rep movsb/stosb keep the compiler
 * from turning a byte loop back into a call to the function being defined. */
__attribute__((weak)) void *memcpy(void *dst, const void *src, size_t n)
{
	void *d = dst;
	__asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
	return dst;
}

__attribute__((weak)) void *memset(void *dst, int c, size_t n)
{
	void *d = dst;
	__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return dst;
}

__attribute__((weak)) void *memmove(void *dst, const void *src, size_t n)
{
	if ((uintptr_t)dst - (uintptr_t)src >= n) {
		/* No harmful overlap: dst is below src or past its end. */
		return memcpy(dst, src, n);
	}
	/* dst overlaps the tail of src: copy backwards. */
	void *d = (char *)dst + n - 1;
	const void *s = (const char *)src + n - 1;
	__asm__ volatile("std\n\trep movsb\n\tcld" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
	return dst;
}

__attribute__((weak)) int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}

/* The arena behind gj_alloc: a fixed .bss block, zero at start, never freed. */
static unsigned char gj_arena[GJ_ARENA_SIZE] __attribute__((aligned(64)));
static size_t gj_arena_used;

/* gj_alloc returns size zeroed bytes aligned to 16 from the arena, or NULL when the
 * arena is exhausted. Memory is never freed. */
static inline void *gj_alloc(size_t size)
{
	size_t avail = sizeof gj_arena - gj_arena_used;
	size_t want = (size + 15) & ~(size_t)15;
	if (want < size || want > avail)
		return NULL;
	void *p = gj_arena + gj_arena_used;
	gj_arena_used += want;
	return p;
}

/* gj_read_all reads stdin until EOF into the arena and returns a pointer to the data,
 * storing its length in *len. It returns NULL when the input does not fit in the free
 * part of the arena or a read fails. The data stays allocated. */
static inline unsigned char *gj_read_all(size_t *len)
{
	unsigned char *start = gj_arena + gj_arena_used;
	size_t avail = sizeof gj_arena - gj_arena_used, n = 0;
	for (;;) {
		if (n == avail) {
			/* Full: succeed only if stdin is at EOF. */
			unsigned char probe;
			long r = gj_read(0, &probe, 1);
			if (r == 0)
				break;
			return NULL;
		}
		long r = gj_read(0, start + n, avail - n);
		if (r < 0)
			return NULL;
		if (r == 0)
			break;
		n += (size_t)r;
	}
	gj_alloc(n);
	*len = n;
	return start;
}

/* ---- process start --------------------------------------------------------------- */

/* gj_initial_stack is the stack pointer as the kernel left it at entry: argc, then
 * argv[0..argc), NULL, envp..., NULL, then the auxiliary vector. Under the sandbox the
 * environment is empty. */
const unsigned long *gj_initial_stack;

__attribute__((used, noreturn)) void gj_start_c(const unsigned long *sp)
{
	gj_initial_stack = sp;
	gj_exit(main());
}

/* The kernel enters _start with rsp pointing at argc and rsp 16-byte aligned; realign
 * anyway and clear rbp to end frame-pointer chains. */
__asm__(".text\n"
	".globl _start\n"
	".type _start, @function\n"
	"_start:\n"
	"\txor %ebp, %ebp\n"
	"\tmov %rsp, %rdi\n"
	"\tand $-16, %rsp\n"
	"\tcall gj_start_c\n"
	"\thlt\n"
	".size _start, . - _start\n");

/* A .note.gridnode ELF note, so every job has a PT_NOTE program header: the sandbox
 * converts that header into the PT_LOAD of its entry stub. namesz 9 ("gridnode\0"),
 * descsz 4, type 1, desc = SDK version 1. */
__asm__(".pushsection .note.gridnode, \"a\", @note\n"
	".balign 4\n"
	".long 9\n"
	".long 4\n"
	".long 1\n"
	".asciz \"gridnode\"\n"
	".balign 4\n"
	".long 1\n"
	".popsection\n");

#endif /* GRIDJOB_H */
