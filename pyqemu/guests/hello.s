# The README's hello.rom: real mode from the reset vector.  It greets on COM1 and powers
# off through isa-debug-exit (exit status (0x10 << 1) | 1 = 33 when the device is there;
# without it the write goes nowhere and the CPU halts).
# Build it with `pyqemu images DIR` (DIR/hello.rom).
#! mode: bios
#! exit: 0x10
#! serial: Hello from pyqemu! Real mode, straight from the reset vector.\r\n
    cli
    mov ax, cs
    mov ds, ax                  # the message lives in this ROM segment
    mov si, msg
next:
    lodsb
    test al, al
    jz done
    mov bl, al
    mov dx, 0x3fd               # LSR: wait for THRE (bit 5) before writing THR
wait_thre:
    in al, dx
    test al, 0x20
    jz wait_thre
    mov dx, 0x3f8
    mov al, bl
    out dx, al
    jmp next
done:
    mov al, 0x10
    out 0xf4, al                # isa-debug-exit,iobase=0xf4: exit status 33
    hlt
    jmp done
msg:
    .ascii "Hello from pyqemu! Real mode, straight from the reset vector."
    .byte 0x0d, 0x0a, 0x00
