# A sieve of Eratosthenes up to 2000 in 32-bit protected mode; the guest checks its
# own answer (303 primes) and reports OK or FAIL on the UART.
#! mode: prot32
#! load: 0x10000
#! exit: 0x15
#! serial: sieve OK\r\n
    mov esp, 0x8000
    mov edi, 0x20000            # the sieve: one byte per number
    mov ecx, 2000
    mov al, 0x1
    cld
    rep stosb
    mov ebx, 0x2
outer:
    mov eax, ebx
    imul eax, ebx
    cmp eax, 2000
    jae count
    cmp byte ptr [0x20000 + ebx], 0x0
    je next_outer
inner:
    mov byte ptr [0x20000 + eax], 0x0
    add eax, ebx
    cmp eax, 2000
    jb inner
next_outer:
    inc ebx
    jmp outer
count:
    xor edx, edx
    mov ebx, 0x2
count_loop:
    movzx eax, byte ptr [0x20000 + ebx]
    add edx, eax
    inc ebx
    cmp ebx, 2000
    jb count_loop
    cmp edx, 303
    jne fail
    mov esi, ok_msg
    jmp report
fail:
    mov esi, fail_msg
report:
    mov dx, 0x3f8
report_loop:
    lodsb
    test al, al
    jz done
    out dx, al
    jmp report_loop
done:
    cmp al, 0x0                 # AF defined (TEST leaves it undefined) in the final state
    mov al, 0x15
    out 0xf4, al
    hlt
ok_msg:
    .ascii "sieve OK"
    .byte 0x0d, 0x0a, 0x00
fail_msg:
    .ascii "sieve FAIL"
    .byte 0x0d, 0x0a, 0x00
