# Hello from a multiboot (v1, a.out kludge) kernel: entered in 32-bit protected mode
# with EAX = 0x2BADB002 and EBX = the multiboot information (Multiboot spec 3.2).
#! mode: multiboot
#! exit: 0x11
#! serial: Hello from multiboot!\r\nmagic=2BADB002 flags-ok\r\n
entry:
    mov esp, 0x90000
    mov ebp, eax            # the boot loader's magic
    mov edi, ebx            # the multiboot information structure
    mov esi, msg
    call puts
    mov esi, magic_msg
    call puts
    mov eax, ebp
    call puthex32
    mov eax, dword ptr [edi]        # info flags: mem_* (bit 0) must be valid
    test eax, 0x1
    jz bad_flags
    mov esi, flags_ok
    call puts
    jmp finish
bad_flags:
    mov esi, flags_bad
    call puts
finish:
    cmp al, 0x0                     # AF defined (TEST leaves it undefined) in the final state
    mov al, 0x11
    out 0xf4, al
    hlt

# puts: print the NUL-terminated string at ESI.
puts:
    lodsb
    test al, al
    jz puts_done
    call putc
    jmp puts
puts_done:
    ret

# putc: print AL after waiting for the transmitter holding register to empty.
putc:
    push edx
    push eax
    mov dx, 0x3fd
putc_wait:
    in al, dx
    test al, 0x20
    jz putc_wait
    pop eax
    mov dx, 0x3f8
    out dx, al
    pop edx
    ret

# puthex32: print EAX as 8 upper-case hex digits.
puthex32:
    mov ecx, 0x8
puthex_loop:
    rol eax, 0x4
    push eax
    and al, 0xf
    cmp al, 0x9
    jbe puthex_digit
    add al, 0x7
puthex_digit:
    add al, 0x30
    call putc
    pop eax
    dec ecx
    jnz puthex_loop
    ret

msg:
    .ascii "Hello from multiboot!"
    .byte 0x0d, 0x0a, 0x00
magic_msg:
    .ascii "magic="
    .byte 0x00
flags_ok:
    .ascii " flags-ok"
    .byte 0x0d, 0x0a, 0x00
flags_bad:
    .ascii " flags-bad"
    .byte 0x0d, 0x0a, 0x00
