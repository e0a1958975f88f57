import CFUSE
import FUSE
import Foundation
import Glibc
import Testing

/// `libellula mount` run by an ordinary user: the mount goes through fusermount3, the user
/// owns and uses it, other users are kept out unless `--allow-other` (which needs
/// `user_allow_other` in /etc/fuse.conf), and a missing /dev/fuse or fusermount3 is a clear
/// error with the fix. The tests create the user `libellula-fuse` (so they run as root and
/// skip with a message otherwise).
@Suite(.serialized) struct MountNonRootTests {
    static let binary = MountLifecycleTests.binary
    static let user = "libellula-fuse"
    static let asUser = "setpriv --reuid=\(user) --regid=\(user) --clear-groups"
    static let asNobody = "setpriv --reuid=65534 --regid=65534 --clear-groups"

    /// Why the suite cannot run here, if it cannot; else creates the test user.
    static func prepare() throws -> String? {
        if geteuid() != 0 { return "non-root mount tests create a user and need root; skipping" }
        if let why = MountRig.skipReason() { return why }
        guard FileManager.default.isExecutableFile(atPath: binary) else { return "\(binary) not built; skipping" }
        for tool in ["setpriv", "useradd", "unshare"] where !have(tool) { return "\(tool) missing; skipping" }
        guard have("fusermount3") else { return "fusermount3 missing (Scripts/test.sh installs fuse3); skipping" }
        let r = try shell("id -u \(user) >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin \(user)")
        if r.status != 0 { return "cannot create user \(user): \(r.output)" }
        return nil
    }

    /// A fresh directory owned by the test user (mode 0755) with a mount point inside.
    static func makeBase(_ tag: String) throws -> String {
        let base = "/tmp/libellula-fuse-user-\(tag)-\(getpid())"
        try FileManager.default.createDirectory(atPath: base + "/mnt", withIntermediateDirectories: true)
        let r = try shell("chown -R \(user): '\(base)' && chmod 755 '\(base)' '\(base)/mnt'")
        #expect(r.status == 0, "\(r.output)")
        return base
    }

    static func cleanUp(_ base: String) {
        _ = lb_fuse_kernel_unmount(base + "/mnt", 1)
        try? FileManager.default.removeItem(atPath: base)
    }

    /// The user mounts MemFS with fusermount3, creates, reads, renames and lists files it
    /// owns; another user and root are refused (no --allow-other); SIGTERM unmounts.
    @Test func userMountsAndUsesItOthersAreKeptOut() throws {
        if let why = try Self.prepare() { print(why); return }
        let base = try Self.makeBase("use")
        defer { Self.cleanUp(base) }
        let m = base + "/mnt"
        let r = try shell("""
            \(Self.asUser) '\(Self.binary)' mount '\(m)' --memfs --cpus 2 > '\(base)/log' 2>&1 & pid=$!
            uid=$(id -u \(Self.user))
            i=0; until grep -q " \(m) fuse.libellula .*user_id=$uid" /proc/mounts; do
              i=$((i+1)); [ $i -lt 300 ] || { cat '\(base)/log'; kill $pid; exit 3; }; sleep 0.05
            done
            fail() { echo "FAIL: $*"; kill $pid; wait $pid; exit 1; }
            \(Self.asUser) sh -c "echo hello > '\(m)/f' && mkdir '\(m)/d' && mv '\(m)/f' '\(m)/d/g'" || fail "user writes"
            [ "$(\(Self.asUser) cat '\(m)/d/g')" = hello ] || fail "user reads"
            [ "$(\(Self.asUser) stat -c %u '\(m)/d/g')" = "$uid" ] || fail "owner"
            [ "$(\(Self.asUser) ls '\(m)/d')" = g ] || fail "ls"
            out=$(\(Self.asNobody) stat '\(m)/d' 2>&1) && fail "nobody got in"
            case "$out" in *"Permission denied"*) ;; *) fail "nobody: $out";; esac
            stat '\(m)/d' >/dev/null 2>&1 && fail "root got in without allow_other"
            kill -TERM $pid; wait $pid; echo "exit $?"
            grep -q " \(m) " /proc/mounts && echo "still mounted"
            cat '\(base)/log'
            """, timeout: 60)
        #expect(!r.timedOut && r.output.contains("exit 0\n"), "\(r.output)")
        #expect(!r.output.contains("FAIL") && !r.output.contains("still mounted"), "\(r.output)")
        #expect(r.output.contains("unmounted \(m)"), "\(r.output)")
    }

    /// --allow-other as a user: refused with the fix while /etc/fuse.conf lacks
    /// user_allow_other; with it, another user reads what the permissions allow and nothing
    /// more. (/etc/fuse.conf is restored afterwards.)
    @Test func allowOtherNeedsUserAllowOtherThenLetsOthersIn() throws {
        if let why = try Self.prepare() { print(why); return }
        let base = try Self.makeBase("other")
        defer { Self.cleanUp(base) }
        let m = base + "/mnt"
        let conf = "/etc/fuse.conf"
        let original = FileManager.default.contents(atPath: conf)
        let text = original.map { String(decoding: $0, as: UTF8.self) } ?? ""
        let enabled = text.split(separator: "\n").contains { $0.trimmingCharacters(in: .whitespaces) == "user_allow_other" }
        defer {
            if let original { _ = FileManager.default.createFile(atPath: conf, contents: original) } else { unlink(conf) }
        }
        if !enabled {
            let r = try shell("\(Self.asUser) '\(Self.binary)' mount '\(m)' --memfs --cpus 1 --allow-other --seconds 5", timeout: 30)
            #expect(r.status == 69, "\(r.output)")
            #expect(r.output.contains("user_allow_other") && r.output.contains("/etc/fuse.conf"), "\(r.output)")
            _ = FileManager.default.createFile(atPath: conf, contents: Data((text + (text.hasSuffix("\n") || text.isEmpty ? "" : "\n") + "user_allow_other\n").utf8))
        }
        let r = try shell("""
            \(Self.asUser) '\(Self.binary)' mount '\(m)' --memfs --cpus 2 --allow-other > '\(base)/log' 2>&1 & pid=$!
            i=0; until grep -q " \(m) .*allow_other" /proc/mounts; do
              i=$((i+1)); [ $i -lt 300 ] || { cat '\(base)/log'; kill $pid; exit 3; }; sleep 0.05
            done
            fail() { echo "FAIL: $*"; kill $pid; wait $pid; exit 1; }
            \(Self.asUser) sh -c "echo shared > '\(m)/public' && chmod 644 '\(m)/public' && echo mine > '\(m)/private' && chmod 600 '\(m)/private'" || fail "user writes"
            [ "$(\(Self.asNobody) cat '\(m)/public')" = shared ] || fail "nobody reads public"
            \(Self.asNobody) cat '\(m)/private' >/dev/null 2>&1 && fail "nobody read private"
            \(Self.asNobody) sh -c "echo x >> '\(m)/public'" 2>/dev/null && fail "nobody wrote public"
            [ "$(cat '\(m)/public')" = shared ] || fail "root reads public"
            kill -TERM $pid; wait $pid; echo "exit $?"
            """, timeout: 60)
        #expect(!r.timedOut && r.output.contains("exit 0\n") && !r.output.contains("FAIL"), "\(r.output)")
    }

    /// A missing /dev/fuse (for a user and for root) and a missing fusermount3 (for a user)
    /// are reported with the fix and exit 69 (EX_UNAVAILABLE); each is staged in a private
    /// mount namespace (a tmpfs over /dev; a non-executable file over fusermount3).
    @Test func missingDeviceOrFusermountIsAClearError() throws {
        if let why = try Self.prepare() { print(why); return }
        let base = try Self.makeBase("missing")
        defer { Self.cleanUp(base) }
        let m = base + "/mnt"
        let noDevice = try shell("""
            unshare -m sh -c "mount -t tmpfs none /dev && \(Self.asUser) '\(Self.binary)' mount '\(m)' --memfs --cpus 1; echo \\"user exit \\$?\\"; '\(Self.binary)' mount '\(m)' --memfs --cpus 1; echo \\"root exit \\$?\\""
            """, timeout: 30)
        #expect(noDevice.output.contains("user exit 69") && noDevice.output.contains("root exit 69"), "\(noDevice.output)")
        #expect(noDevice.output.components(separatedBy: "modprobe fuse").count == 3, "\(noDevice.output)")
        let fake = base + "/not-fusermount3"
        _ = FileManager.default.createFile(atPath: fake, contents: Data(), attributes: [.posixPermissions: 0o644])
        let noTool = try shell("""
            f=$(command -v fusermount3)
            unshare -m sh -c "mount --bind '\(fake)' \\"$f\\" && \(Self.asUser) '\(Self.binary)' mount '\(m)' --memfs --cpus 1; echo \\"user exit \\$?\\""
            """, timeout: 30)
        #expect(noTool.output.contains("user exit 69"), "\(noTool.output)")
        #expect(noTool.output.contains("fusermount3 is not installed") && noTool.output.contains("apt-get install fuse3"), "\(noTool.output)")
        #expect(!MountLifecycleTests.isMounted(m))
    }
}
