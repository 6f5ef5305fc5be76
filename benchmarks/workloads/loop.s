# Tight integer loop: four register-only instructions per iteration (add, xor,
# dec, jnz).  64-bit long mode at CPL 3 (paging on, as always in long mode).
# Result: EBX = the running xor of the partial sums.
    mov ecx, {N}
    xor eax, eax
    xor edx, edx
loop_top:
    add eax, ecx
    xor edx, eax
    dec ecx
    jnz loop_top
    mov ebx, edx
    mov al, 0x2a
    out 0xf4, al
