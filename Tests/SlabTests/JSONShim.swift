import Foundation

enum JSONEncoderShim {
    static func encode<T: Encodable>(_ v: T) throws -> Data { try JSONEncoder().encode(v) }
    static func decode<T: Decodable>(_ t: T.Type, _ d: Data) throws -> T { try JSONDecoder().decode(t, from: d) }
}
