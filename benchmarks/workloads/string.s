# String instructions, N rounds of: rep stosd (fill 1 KiB at A with a byte
# pattern), rep movsb (copy A to B), a 0xff marker at B[i & 0x3ff], repne scasb
# (find it).  Each round adds the count left in ECX and the byte after the marker.
# A REP-prefixed instruction counts as one instruction, as a hardware
# instructions-retired counter counts it.  Result: EBX = the sum.
    cld
    mov r8d, {N}
    xor ebx, ebx
    mov r9, {BUF_A}
    mov r10, {BUF_B}
round:
    mov eax, r8d
    and eax, 0x7f
    imul eax, eax, 0x1010101
    mov rdi, r9
    mov ecx, 0x100
    rep stosd
    mov rsi, r9
    mov rdi, r10
    mov ecx, 0x400
    rep movsb
    mov edx, r8d
    and edx, 0x3ff
    mov byte ptr [r10 + rdx], 0xff
    mov rdi, r10
    mov al, 0xff
    mov ecx, 0x400
    repne scasb
    add ebx, ecx
    movzx eax, byte ptr [rdi]
    add ebx, eax
    dec r8d
    jnz round
    mov al, 0x2a
    out 0xf4, al
