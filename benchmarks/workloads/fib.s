# Recursive calls: fib(K) by naive recursion (call, ret, push, pop), N times.
# Result: RBX = N * fib(K).
    mov r12d, {N}
    xor ebx, ebx
again:
    mov edi, {K}
    call fib
    add rbx, rax
    dec r12d
    jnz again
    mov al, 0x2a
    out 0xf4, al
fib:
    cmp rdi, 0x2
    jb fib_base
    push rdi
    dec rdi
    call fib
    pop rdi
    push rax
    sub rdi, 0x2
    call fib
    pop rdx
    add rax, rdx
    ret
fib_base:
    mov rax, rdi
    ret
