# Sieve of Eratosthenes over the numbers below N (one byte each), then a count of
# the primes.  Result: EBX = the number of primes below N.
    mov rdi, {BUF}
    mov ecx, {N}
fill:
    mov byte ptr [rdi], 0x1
    inc rdi
    dec ecx
    jnz fill
    mov rsi, {BUF}
    mov ebx, 0x2
outer:
    mov eax, ebx
    imul eax, ebx
    cmp eax, {N}
    jae count
    cmp byte ptr [rsi + rbx], 0x0
    je next_outer
inner:
    mov byte ptr [rsi + rax], 0x0
    add eax, ebx
    cmp eax, {N}
    jb inner
next_outer:
    inc ebx
    jmp outer
count:
    xor edx, edx
    mov ebx, 0x2
count_loop:
    movzx eax, byte ptr [rsi + rbx]
    add edx, eax
    inc ebx
    cmp ebx, {N}
    jb count_loop
    mov ebx, edx
    mov al, 0x2a
    out 0xf4, al
