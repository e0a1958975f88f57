import FUSE
import Foundation
import Glibc
import Testing

/// POSIX permissions on the mount, checked by the kernel with the caller's credentials
/// (`default_permissions`), and ownership of what a non-root caller creates.
@Suite(.serialized) struct MountPermissionTests {
    func run(_ rig: MountRig) throws {
        guard have("setpriv") else { print("setpriv missing; skipping"); return }
        let m = rig.path
        let asNobody = "setpriv --reuid=65534 --regid=65534 --clear-groups"
        let r = try shell("""
            set -e
            deny() { if "$@" 2>/dev/null; then echo "allowed: $*"; exit 1; fi; }
            echo secret > '\(m)/private'; chmod 600 '\(m)/private'
            echo open > '\(m)/public'; chmod 644 '\(m)/public'
            mkdir '\(m)/closed'; chmod 755 '\(m)/closed'
            mkdir '\(m)/shared'; chmod 1777 '\(m)/shared'
            mkdir '\(m)/noexec'; chmod 700 '\(m)/noexec'; echo x > '\(m)/noexec/f'; chmod 644 '\(m)/noexec/f'
            touch '\(m)/shared/roots'; chmod 666 '\(m)/shared/roots'
            \(asNobody) cat '\(m)/public' >/dev/null
            deny \(asNobody) cat '\(m)/private'
            deny \(asNobody) sh -c "echo x > '\(m)/public'"
            deny \(asNobody) mkdir '\(m)/closed/sub'
            deny \(asNobody) cat '\(m)/noexec/f'
            \(asNobody) sh -c "echo mine > '\(m)/shared/mine'"
            [ "$(stat -c %u:%g '\(m)/shared/mine')" = 65534:65534 ]
            \(asNobody) mkdir '\(m)/shared/dir'
            [ "$(stat -c %u '\(m)/shared/dir')" = 65534 ]
            deny \(asNobody) rm -f '\(m)/shared/roots'
            [ -e '\(m)/shared/roots' ]
            deny \(asNobody) chmod 777 '\(m)/public'
            \(asNobody) chmod 600 '\(m)/shared/mine'
            deny \(asNobody) chown 0 '\(m)/shared/mine'
            \(asNobody) rm '\(m)/shared/mine'
            echo done
            """, timeout: 60)
        #expect(r.status == 0 && r.output.hasSuffix("done\n"), "\(r.output)")
    }

    @Test func permissionsOnMemFS() throws {
        guard let rig = try MountRig.make(options: .init(allowOther: true)) else { return }
        defer { rig.close() }
        try run(rig)
    }

    @Test func permissionsOnHostFS() throws {
        guard let rig = try MountRig.make(hostBacked: true, options: .init(allowOther: true)) else { return }
        defer { rig.close() }
        chmod(rig.backing!, 0o755)
        try run(rig)
        var st = stat()
        #expect(lstat(rig.backing! + "/shared/dir", &st) == 0 && st.st_uid == 65534)
    }
}
