# Hello over the 16550A UART in real mode, straight from the reset vector.
# The ROM's reset vector jumps to F000:0000 (pyqemu.images.bios_image).
#! mode: bios
#! exit: 0x10
#! serial: Hello from the reset vector!\r\n
    cli
    mov ax, cs
    mov ds, ax              # the message lives in this ROM segment
    mov si, msg
next:
    lodsb
    test al, al
    jz done
    mov bl, al
    mov dx, 0x3fd           # LSR: wait for THRE (bit 5) before writing THR
wait_thre:
    in al, dx
    test al, 0x20
    jz wait_thre
    mov dx, 0x3f8
    mov al, bl
    out dx, al
    jmp next
done:
    cmp al, 0x0             # AF defined (TEST leaves it undefined) in the final state compared
    mov al, 0x10
    out 0xf4, al            # isa-debug-exit: exit status (0x10 << 1) | 1 = 33
    hlt
msg:
    .ascii "Hello from the reset vector!"
    .byte 0x0d, 0x0a, 0x00
