# gridnode entry stub (x86-64). Data block first (96 bytes), code at offset 96.
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
	# prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)
	mov $157, %eax
	mov $22, %edi
	mov $1, %esi
	syscall
	test %rax, %rax
	jnz fail
	# original entry, PC-relative so a load bias cancels out
	lea data(%rip), %rax
	add delta(%rip), %rax
	popfq
	mov %rax, -8(%rsp)
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
	jmp *-8(%rsp)
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
