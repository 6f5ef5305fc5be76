# Memory copy loops: fill N dwords with a pattern (dword stores), copy them byte
# by byte (byte loads and stores), copy that dword by dword, then checksum the
# last copy (rotate and add).  Result: EBX = the checksum.
    mov rsi, {SRC}
    mov ecx, {N}
    mov edx, 0x12345678
fill:
    mov dword ptr [rsi], edx
    add edx, 0x9e3779b9
    add rsi, 0x4
    dec ecx
    jnz fill
    mov rsi, {SRC}
    mov rdi, {DST1}
    mov ecx, {NBYTES}
bcopy:
    mov al, byte ptr [rsi]
    mov byte ptr [rdi], al
    inc rsi
    inc rdi
    dec ecx
    jnz bcopy
    mov rsi, {DST1}
    mov rdi, {DST2}
    mov ecx, {N}
dcopy:
    mov eax, dword ptr [rsi]
    mov dword ptr [rdi], eax
    add rsi, 0x4
    add rdi, 0x4
    dec ecx
    jnz dcopy
    mov rsi, {DST2}
    mov ecx, {N}
    xor ebx, ebx
sum:
    rol ebx, 0x5
    add ebx, dword ptr [rsi]
    add rsi, 0x4
    dec ecx
    jnz sum
    mov al, 0x2a
    out 0xf4, al
