# gridnode entry stub (x86-64). Data block first (96 bytes), code at offset 96.
	.set USER_TOP, 0x7ffffffff000	# TASK_SIZE with 4-level paging; the new stack ends here
	.set SP0, USER_TOP - 0x110	# the job's rsp at entry: the stack image, then zeros to the top
	.set VVAR_BELOW, 0x100000	# unmapped below the vDSO image: its vvar pages (6 on Linux 6.18)
	.set OLD_STACK, 0x4000000	# unmapped below the kernel's stack top: its whole stack
	.set KEEP, 0x100000		# kept of a kernel's stack at USER_TOP: its initial extent
	.text
data:
rl_cpu:   .quad 0, 0      # 0
rl_stack: .quad 0, 0      # 16
rl_core:  .quad 0, 0      # 32
rl_fsize: .quad 0, 0      # 48
rl_as:    .quad 0, 0      # 64
sparam:   .quad 0         # 80: struct sched_param {0}
delta:    .quad 0         # 88: original entry - stub vaddr
code:
	pushfq
	pop %r15                # the kernel's flags, restored at the end
	mov $0, %esi
	lea rl_cpu(%rip), %rdx
	call setrl
	mov $3, %esi
	lea rl_stack(%rip), %rdx
	call setrl
	mov $4, %esi
	lea rl_core(%rip), %rdx
	call setrl
	mov $1, %esi
	lea rl_fsize(%rip), %rdx
	call setrl
	mov $9, %esi
	lea rl_as(%rip), %rdx
	call setrl
	# close_range(3, ~0U, 0)
	mov $436, %eax
	mov $3, %edi
	mov $-1, %esi
	xor %edx, %edx
	syscall
	test %rax, %rax
	jnz fail
	# sched_setscheduler(0, SCHED_IDLE, &sparam)
	mov $144, %eax
	xor %edi, %edi
	mov $5, %esi
	lea sparam(%rip), %rdx
	syscall
	test %rax, %rax
	jnz fail
	# prctl(PR_SET_DUMPABLE, 0)
	mov $157, %eax
	mov $4, %edi
	xor %esi, %esi
	syscall
	test %rax, %rax
	jnz fail
	# arch_prctl(ARCH_SET_CPUID, 0): cpuid faults (SIGSEGV) where the CPU has CPUID
	# faulting, so a job cannot read the host processor; ignored where it cannot.
	mov $158, %eax
	mov $0x1012, %edi
	xor %esi, %esi
	syscall

	# The kernel's stack: argc, argv, 0, envp, 0, then auxv (type, value) pairs to AT_NULL.
	mov (%rsp), %rsi
	lea 16(%rsp,%rsi,8), %rsi
1:	add $8, %rsi
	cmpq $0, -8(%rsi)
	jne 1b
	xor %ebx, %ebx          # AT_EXECFN: its string is the last thing below the stack top
	xor %ebp, %ebp          # AT_SYSINFO_EHDR: the vDSO
	xor %r12d, %r12d        # AT_PHDR, AT_PHENT, AT_PHNUM: copied to the new auxv
	xor %r13d, %r13d
	xor %r14d, %r14d
2:	lodsq
	mov %rax, %rcx
	lodsq
	cmp $3, %rcx
	cmove %rax, %r12
	cmp $4, %rcx
	cmove %rax, %r13
	cmp $5, %rcx
	cmove %rax, %r14
	cmp $31, %rcx
	cmove %rax, %rbx
	cmp $33, %rcx
	cmove %rax, %rbp
	test %rcx, %rcx
	jnz 2b

	# munmap the vDSO and the kernel's stack, which ends at top = page_up(AT_EXECFN + 1)
	# (the string is the last thing on it). The vDSO image starts at AT_SYSINFO_EHDR with its
	# vvar pages below. When the job's image, which ends with the stub's page, lies below
	# the vvar pages (every ET_EXEC job), nothing else is mapped from there to the stack
	# top, and one munmap takes both. A static PIE lies just above the vDSO: then the vDSO
	# goes alone, exactly page_up(e_shoff + e_shnum*e_shentsize) bytes (its section headers
	# come last), and then the stack. No push or call from here until rsp is switched.
	#
	# When the kernel's stack already ends at USER_TOP (jobs start with ADDR_NO_RANDOMIZE)
	# it is kept, in place of a new mapping: only what lies below its top KEEP bytes is
	# unmapped, and what the kernel and this stub wrote on it is zeroed below (r8 = 1).
	test %rbx, %rbx
	jz fail
	lea 4096(%rbx), %rsi
	and $-4096, %rsi
	xor %r8d, %r8d
	mov $USER_TOP, %rax
	cmp %rax, %rsi
	jne 5f
	mov $1, %r8d
	sub $KEEP, %rsi
5:	lea -OLD_STACK(%rsi), %rdi
	test %rbp, %rbp
	jz 4f
	lea data+4096(%rip), %rax
	cmp %rbp, %rax
	ja 3f
	lea -VVAR_BELOW(%rbp), %rdi
	cmp %rax, %rdi
	cmovb %rax, %rdi
	jmp 4f
3:	movzwl 0x3c(%rbp), %eax
	movzwl 0x3a(%rbp), %ecx
	imul %ecx, %eax
	add 0x28(%rbp), %rax
	lea 4095(%rbp,%rax), %rsi
	and $-4096, %rsi
	lea -VVAR_BELOW(%rbp), %rdi
	sub %rdi, %rsi
	mov $11, %eax
	syscall
	test %rax, %rax
	jnz fail
	test %r8, %r8
	jnz 6f
	lea 4096(%rbx), %rsi
	and $-4096, %rsi
	lea -OLD_STACK(%rsi), %rdi
4:	sub %rdi, %rsi
	mov $11, %eax
	syscall
	test %rax, %rax
	jnz fail
6:	test %r8, %r8
	jz 7f
	# In place: zero from a page below rsp's page to the top (the kernel's strings, auxv,
	# random bytes and this stub's return addresses all lie there).
	mov %rsp, %rdi
	and $-4096, %rdi
	sub $4096, %rdi
	mov $USER_TOP, %rcx
	sub %rdi, %rcx
	shr $3, %rcx
	xor %eax, %eax
	rep stosq
	jmp 8f
7:	# mmap(USER_TOP - page_up(RLIMIT_STACK), ..., PROT_READ|PROT_WRITE,
	#      MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE|MAP_STACK, -1, 0)
	mov $USER_TOP, %rsi
	mov %rsi, %rdi
	sub rl_stack(%rip), %rdi
	and $-4096, %rdi
	sub %rdi, %rsi
	mov $3, %edx
	mov $0x120022, %r10d
	mov $-1, %r8
	xor %r9d, %r9d
	mov $9, %eax
	syscall
	cmp %rdi, %rax
	jne fail
8:	# The canonical stack: copy the image, then fill in the entries that are not constant.
	mov $SP0, %rsp
	mov %rsp, %rdi
	lea image(%rip), %rsi
	mov $image_end - image, %ecx
	rep movsb
	mov %r12, at_phdr - image(%rsp)
	mov %r13, at_phent - image(%rsp)
	mov %r14, at_phnum - image(%rsp)
	# original entry, PC-relative so a load bias cancels out
	lea data(%rip), %rax
	add delta(%rip), %rax
	mov %rax, at_entry - image(%rsp)

	# prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)
	mov $157, %eax
	mov $22, %edi
	mov $1, %esi
	syscall
	test %rax, %rax
	jnz fail
	push %r15
	popfq
	movq $0, -8(%rsp)       # mov leaves the flags alone
	mov $0, %eax
	mov $0, %ebx
	mov $0, %ecx
	mov $0, %edx
	mov $0, %esi
	mov $0, %edi
	mov $0, %ebp
	mov $0, %r8d
	mov $0, %r9d
	mov $0, %r10d
	mov $0, %r11d
	mov $0, %r12d
	mov $0, %r13d
	mov $0, %r14d
	mov $0, %r15d
	jmp *at_entry - image(%rsp)
# setrl: prlimit64(0, %esi, %rdx, NULL); %edi = 0
setrl:
	mov $302, %eax
	xor %edi, %edi
	xor %r10d, %r10d
	syscall
	test %rax, %rax
	jnz fail
	ret
fail:
	mov $231, %eax
	mov $125, %edi
	syscall
	hlt

# The job's initial stack from SP0: argc 1, argv {"gridnode-job"}, no environment, and an
# auxv of values that are the same on every run and worker.
	.balign 8
image:
	.quad 1, SP0 + s_job - image, 0
	.quad 0
	.quad 3
at_phdr:  .quad 0
	.quad 4
at_phent: .quad 0
	.quad 5
at_phnum: .quad 0
	.quad 6, 4096           # AT_PAGESZ
	.quad 17, 100           # AT_CLKTCK
	.quad 9                 # AT_ENTRY
at_entry: .quad 0
	.quad 23, 0             # AT_SECURE
	.quad 25, SP0 + random - image
	.quad 31, SP0 + s_job - image      # AT_EXECFN
	.quad 15, SP0 + s_platform - image # AT_PLATFORM
	.quad 0, 0
random:	.quad 0, 0              # AT_RANDOM: 16 zero bytes
s_job:	.asciz "gridnode-job"
s_platform: .asciz "x86_64"
image_end:
