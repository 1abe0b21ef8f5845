"""``-version`` and ``-help``, worded and laid out as QEMU's.

The version line is the one scripts parse (``QEMU emulator version 7.2.22
(Debian …)``); it comes from the profile, so it names the QEMU the monitor
speaks like.
"""

from __future__ import annotations

from qmpsim.qmp.profiles import ProfileSpec

__all__ = ["help_text", "version_text"]


def _copyright_year(version: tuple[int, int, int]) -> int:
    """The last year in the copyright line of a QEMU release."""
    major, minor, _ = version
    if major >= 5:
        return major + 2015
    if major >= 3:
        return 2015 + major
    return 2015 + max(0, (minor - 3) // 3)


def version_text(profile: ProfileSpec) -> str:
    """What ``qemu-system-x86_64 -version`` prints."""
    major, minor, micro = profile.version
    package = f" ({profile.package.strip()})" if profile.package.strip() else ""
    year = _copyright_year(profile.version)
    return (
        f"QEMU emulator version {major}.{minor}.{micro}{package}\n"
        f"Copyright (c) 2003-{year} Fabrice Bellard and the QEMU Project developers\n"
    )


_OPTIONS = """\
Standard options:
-h or -help     display this help and exit
-version        display version information and exit
-machine [type=]name[,prop[=value][,...]]
                selects emulated machine ('-machine help' for list)
-cpu cpu        select CPU ('-cpu help' for list)
-accel [accel=]accelerator[,prop[=value][,...]]
                select accelerator (kvm or tcg)
-smp [[cpus=]n][,maxcpus=maxcpus][,sockets=sockets][,dies=dies][,cores=cores][,threads=threads]
                set the number of initial CPUs to 'n' [default=1]
-m [size=]megs[,slots=n,maxmem=size]
                configure guest RAM
-name string1[,process=string2][,debug-threads=on|off]
                set the name of the guest
-uuid %08x-%04x-%04x-%04x-%012x
                specify machine UUID
-device driver[,prop[=value][,...]]
                add device (based on driver)
-global driver.property=value
                set a global default for a driver property
-object TYPENAME[,PROP1=VALUE1,...]
                create a new object of type TYPENAME

Block device options:
-drive [file=file][,if=type][,media=d][,index=i][,id=name][,format=f][,werror=...][,rerror=...]
                use 'file' as a drive image
-blockdev [driver=]driver[,node-name=N][,read-only=on|off][,...]
                configure a block backend
-cdrom file     use 'file' as CD-ROM image

Display options:
-display none   no display
-nographic      disable graphical output and redirect serial I/Os to console
-vnc <display>  shows the display of the VM on a VNC server ('127.0.0.1:0')
-spice [port=port][,addr=addr][,tls-port=port][,disable-ticketing=on|off][,...]
                enable spice

Character device options:
-chardev socket,id=id[,path=path][,fd=h][,server=on|off][,wait=on|off]
-chardev pty|null|file,id=id[,path=path]

Debug/Expert options:
-no-user-config do not load default user-provided config files at startup
-nodefaults     don't create default devices
-qmp dev        like -monitor but opens in 'control' mode
-mon [chardev=]name[,mode=readline|control][,pretty[=on|off]]
-pidfile file   write PID to 'file'
-S              freeze CPU at startup (use 'c' to start execution)
-no-shutdown    stop before shutdown
-no-reboot      exit instead of rebooting
-action reboot=reset|shutdown,shutdown=poweroff|pause,panic=pause|shutdown|none,
       watchdog=reset|shutdown|poweroff|inject-nmi|pause|debug|none
                action when guest reboots, shuts down, panics or its watchdog fires
-watchdog-action reset|shutdown|poweroff|inject-nmi|pause|debug|none
                action when watchdog fires [default=reset]
-daemonize      daemonize QEMU after initializing
-msg [timestamp[=on|off]][,guest-name=[on|off]]
                control error message format

This QEMU is qmpsim's simulation: the VM is simulated and only its monitors are real.
See `qmpsim qemu --help` and docs/libvirt.md.
"""


def help_text(profile: ProfileSpec, prog: str) -> str:
    """What ``-help`` prints: the version, then the usage and the options."""
    return (
        version_text(profile)
        + f"usage: {prog} [options] [disk_image]\n\n"
        + "'disk_image' is a raw hard disk image for IDE hard disk 0\n\n"
        + _OPTIONS
    )
