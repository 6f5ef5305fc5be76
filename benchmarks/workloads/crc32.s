# Bitwise CRC-32 (the reflected polynomial 0xEDB88320, as zlib's) of N bytes that
# the guest first fills from a linear congruential generator: one shift, one
# conditional xor per bit (the branch reads CF from the shift).
# Result: EBX = the CRC-32 of the buffer.
    mov rdi, {BUF}
    mov ecx, {N}
    mov edx, 0x1234567
fill:
    imul edx, edx, 0x41c64e6d
    add edx, 0x3039
    mov eax, edx
    shr eax, 0x10
    mov byte ptr [rdi], al
    inc rdi
    dec ecx
    jnz fill
    mov rsi, {BUF}
    mov ecx, {N}
    mov eax, 0xffffffff
byte_loop:
    movzx edx, byte ptr [rsi]
    xor eax, edx
    mov edi, 0x8
bit_loop:
    shr eax, 0x1
    jnc no_xor
    xor eax, 0xedb88320
no_xor:
    dec edi
    jnz bit_loop
    inc rsi
    dec ecx
    jnz byte_loop
    not eax
    mov ebx, eax
    mov al, 0x2a
    out 0xf4, al
