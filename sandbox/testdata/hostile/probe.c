/* probe: reports what the job inherited. Writes "fds: ..." listing every open fd in
 * 0..1023 (found with zero-length read and write: a closed fd gives EBADF to both), then
 * "env: N" with the number of environment strings on the initial stack. Want: exited 0
 * with "fds: 0 1 2" and "env: 0". */
#include "gridjob.h"

#define EBADF 9

int main(void)
{
	char out[8192];
	size_t n = 0;
	memcpy(out, "fds:", 4);
	n = 4;
	char z;
	for (int fd = 0; fd < 1024; fd++) {
		if (gj_read(fd, &z, 0) == -EBADF && gj_write(fd, &z, 0) == -EBADF)
			continue;
		out[n++] = ' ';
		n += gj_fmt_u64(out + n, (uint64_t)fd);
	}
	out[n++] = '\n';

	/* Initial stack: argc, argv[0..argc), NULL, envp..., NULL. */
	const unsigned long *sp = gj_initial_stack;
	unsigned long argc = sp[0];
	const unsigned long *envp = sp + 1 + argc + 1;
	uint64_t env = 0;
	while (envp[env])
		env++;
	memcpy(out + n, "env: ", 5);
	n += 5;
	n += gj_fmt_u64(out + n, env);
	out[n++] = '\n';
	return gj_write_all(1, out, n) < 0;
}
