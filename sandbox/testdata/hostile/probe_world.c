/* probe_world: prints everything a job can observe at entry, one "name value" line each:
 * the general registers, rflags, segment selectors, MXCSR, the x87 control word and
 * xmm0-15 as its own _start found them; the 64 bytes below the entry rsp; argc, argv,
 * envp and the whole auxv, with the strings and AT_RANDOM's 16 bytes they point at; the
 * initial stack from rsp to the end of its page; and, when the auxv has AT_SYSINFO_EHDR,
 * the vDSO's header and what its time() and getcpu() return (neither is a system call).
 * Replicas agree only if all of it is the same on every run and worker.
 *
 * It does not include gridjob.h, whose _start would lose the registers. */
#include <stddef.h>
#include <stdint.h>

#define AT_NULL 0
#define AT_PHDR 3
#define AT_PLATFORM 15
#define AT_RANDOM 25
#define AT_EXECFN 31
#define AT_SYSINFO_EHDR 33

/* Saved by _start before any C code runs. */
uint64_t gregs[16]; /* rax rbx rcx rdx rsi rdi rbp rsp r8..r15 */
uint64_t entry_flags, below[8];
uint8_t xmm[16][16];
uint32_t mxcsr;
uint16_t fcw, sregs[6];

__asm__(".text\n"
	".globl _start\n"
	"_start:\n"
	"\tmov %rax, gregs+0(%rip)\n"
	"\tmov %rbx, gregs+8(%rip)\n"
	"\tmov %rcx, gregs+16(%rip)\n"
	"\tmov %rdx, gregs+24(%rip)\n"
	"\tmov %rsi, gregs+32(%rip)\n"
	"\tmov %rdi, gregs+40(%rip)\n"
	"\tmov %rbp, gregs+48(%rip)\n"
	"\tmov %rsp, gregs+56(%rip)\n"
	"\tmov %r8, gregs+64(%rip)\n"
	"\tmov %r9, gregs+72(%rip)\n"
	"\tmov %r10, gregs+80(%rip)\n"
	"\tmov %r11, gregs+88(%rip)\n"
	"\tmov %r12, gregs+96(%rip)\n"
	"\tmov %r13, gregs+104(%rip)\n"
	"\tmov %r14, gregs+112(%rip)\n"
	"\tmov %r15, gregs+120(%rip)\n"
	"\tlea below(%rip), %rdi\n"
	"\tlea -64(%rsp), %rsi\n"
	"\tmov $64, %ecx\n"
	"\trep movsb\n"
	"\tpushfq\n"
	"\tpop entry_flags(%rip)\n"
	"\tmovdqu %xmm0, xmm+0(%rip)\n"
	"\tmovdqu %xmm1, xmm+16(%rip)\n"
	"\tmovdqu %xmm2, xmm+32(%rip)\n"
	"\tmovdqu %xmm3, xmm+48(%rip)\n"
	"\tmovdqu %xmm4, xmm+64(%rip)\n"
	"\tmovdqu %xmm5, xmm+80(%rip)\n"
	"\tmovdqu %xmm6, xmm+96(%rip)\n"
	"\tmovdqu %xmm7, xmm+112(%rip)\n"
	"\tmovdqu %xmm8, xmm+128(%rip)\n"
	"\tmovdqu %xmm9, xmm+144(%rip)\n"
	"\tmovdqu %xmm10, xmm+160(%rip)\n"
	"\tmovdqu %xmm11, xmm+176(%rip)\n"
	"\tmovdqu %xmm12, xmm+192(%rip)\n"
	"\tmovdqu %xmm13, xmm+208(%rip)\n"
	"\tmovdqu %xmm14, xmm+224(%rip)\n"
	"\tmovdqu %xmm15, xmm+240(%rip)\n"
	"\tstmxcsr mxcsr(%rip)\n"
	"\tfnstcw fcw(%rip)\n"
	"\tmov %cs, sregs+0(%rip)\n"
	"\tmov %ss, sregs+2(%rip)\n"
	"\tmov %ds, sregs+4(%rip)\n"
	"\tmov %es, sregs+6(%rip)\n"
	"\tmov %fs, sregs+8(%rip)\n"
	"\tmov %gs, sregs+10(%rip)\n"
	"\tmov gregs+56(%rip), %rdi\n"
	"\tand $-16, %rsp\n"
	"\tcall probe\n"
	"\thlt\n");

/* The PT_NOTE the sandbox turns into its stub's segment (as gridjob.h adds it). */
__asm__(".pushsection .note.gridnode, \"a\", @note\n"
	".balign 4\n"
	".long 9, 4, 1\n"
	".asciz \"gridnode\"\n"
	".balign 4\n"
	".long 1\n"
	".popsection\n");

/* gcc may emit calls to these even freestanding. */
void *memcpy(void *dst, const void *src, size_t n)
{
	void *d = dst;
	__asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
	return dst;
}

void *memset(void *dst, int c, size_t n)
{
	void *d = dst;
	__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return dst;
}

static long sys3(long n, long a, long b, long c)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return r;
}

static char out[64 << 10];
static size_t outn;

static void put(const char *s)
{
	while (*s && outn < sizeof out)
		out[outn++] = *s++;
}

static void hex(uint64_t v)
{
	char b[17];
	int n = 16;
	b[16] = 0;
	do {
		b[--n] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	put(b + n);
}

static void bytes(const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++) {
		char h[3] = {"0123456789abcdef"[b[i] >> 4], "0123456789abcdef"[b[i] & 15], 0};
		put(h);
	}
}

static void line(const char *name, uint64_t v)
{
	put(name);
	put(" ");
	hex(v);
	put("\n");
}

/* str prints a quoted, escaped string of at most 256 bytes. */
static void str(const char *s)
{
	put("\"");
	for (int i = 0; i < 256 && s[i]; i++) {
		char c[2] = {s[i], 0};
		if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\')
			put(c);
		else {
			put("\\x");
			bytes(&s[i], 1);
		}
	}
	put("\"");
}

typedef struct {
	uint32_t name, type;
	uint64_t flags, addr, offset, size;
	uint32_t link, info;
	uint64_t align, entsize;
} shdr;

typedef struct {
	uint32_t name;
	uint8_t info, other;
	uint16_t shndx;
	uint64_t value, size;
} sym;

/* vdso_sym finds a dynamic symbol of the vDSO at base through its section headers. */
static void *vdso_sym(const uint8_t *base, const char *want)
{
	const shdr *sh = (const shdr *)(base + *(const uint64_t *)(base + 0x28));
	int n = *(const uint16_t *)(base + 0x3c);
	for (int i = 0; i < n; i++) {
		if (sh[i].type != 11) /* SHT_DYNSYM */
			continue;
		const sym *s = (const sym *)(base + sh[i].offset);
		const char *names = (const char *)(base + sh[sh[i].link].offset);
		for (size_t j = 0; j < sh[i].size / sizeof(sym); j++) {
			const char *a = names + s[j].name, *b = want;
			while (*a && *a == *b)
				a++, b++;
			if (*a == *b && s[j].value)
				return (void *)(base + s[j].value);
		}
	}
	return 0;
}

__attribute__((noreturn, used)) void probe(const uint64_t *sp)
{
	static const char *names[16] = {"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
					"r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};
	for (int i = 0; i < 16; i++)
		line(names[i], gregs[i]);
	line("rflags", entry_flags);
	static const char *snames[6] = {"cs", "ss", "ds", "es", "fs", "gs"};
	for (int i = 0; i < 6; i++)
		line(snames[i], sregs[i]);
	line("mxcsr", mxcsr);
	line("fcw", fcw);
	for (int i = 0; i < 16; i++) {
		put("xmm");
		hex((uint64_t)i);
		put(" ");
		bytes(xmm[i], 16);
		put("\n");
	}
	put("below_rsp ");
	bytes(below, sizeof below);
	put("\n");

	uint64_t argc = sp[0];
	line("argc", argc);
	const uint64_t *p = sp + 1;
	for (uint64_t i = 0; i < argc; i++, p++) {
		put("argv ");
		hex(*p);
		put(" ");
		str((const char *)*p);
		put("\n");
	}
	line("argv_end", *p++);
	for (; *p; p++) {
		put("env ");
		hex(*p);
		put(" ");
		str((const char *)*p);
		put("\n");
	}
	p++;
	const uint8_t *vdso = 0;
	for (; p[0] != AT_NULL; p += 2) {
		put("auxv ");
		hex(p[0]);
		put(" ");
		hex(p[1]);
		if (p[0] == AT_PLATFORM || p[0] == AT_EXECFN) {
			put(" ");
			str((const char *)p[1]);
		}
		if (p[0] == AT_RANDOM) {
			put(" ");
			bytes((const void *)p[1], 16);
		}
		if (p[0] == AT_SYSINFO_EHDR)
			vdso = (const uint8_t *)p[1];
		put("\n");
	}
	line("auxv_end", p[1]);
	uint64_t end = ((uint64_t)sp | 4095) + 1;
	put("stack ");
	bytes(sp, end - (uint64_t)sp);
	put("\n");

	if (vdso) {
		put("vdso_ehdr ");
		bytes(vdso, 64);
		put("\n");
		long (*vtime)(long *) = (long (*)(long *))vdso_sym(vdso, "__vdso_time");
		if (vtime)
			line("vdso_time", (uint64_t)vtime(0));
		long (*vgetcpu)(unsigned *, unsigned *, void *) =
			(long (*)(unsigned *, unsigned *, void *))vdso_sym(vdso, "__vdso_getcpu");
		if (vgetcpu) {
			unsigned cpu = 0, node = 0;
			vgetcpu(&cpu, &node, 0);
			line("vdso_getcpu", cpu);
		}
	}
	put("end\n");
	for (size_t off = 0; off < outn;) {
		long r = sys3(1, 1, (long)(out + off), (long)(outn - off));
		if (r <= 0)
			break;
		off += (size_t)r;
	}
	for (;;)
		sys3(60, 0, 0, 0);
}
