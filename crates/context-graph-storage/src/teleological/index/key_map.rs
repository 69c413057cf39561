//! Mapping between array ids and the u64 keys of an in-memory index.
//!
//! Every upsert takes a fresh key, so a replaced or removed entry's key is never reused: a
//! graph can never confuse an old vector with a new one under the same key.

use std::collections::HashMap;

use uuid::Uuid;

#[derive(Debug, Default)]
pub(crate) struct KeyMap {
    key_of: HashMap<Uuid, u64>,
    id_of: HashMap<u64, Uuid>,
    next_key: u64,
}

impl KeyMap {
    /// A fresh key for `id`. The caller removes any previous key of `id` first.
    pub(crate) fn assign(&mut self, id: Uuid) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.key_of.insert(id, key);
        self.id_of.insert(key, id);
        key
    }

    /// Forget `id`, returning its key.
    pub(crate) fn remove(&mut self, id: Uuid) -> Option<u64> {
        let key = self.key_of.remove(&id)?;
        self.id_of.remove(&key);
        Some(key)
    }

    pub(crate) fn key(&self, id: Uuid) -> Option<u64> {
        self.key_of.get(&id).copied()
    }

    pub(crate) fn id(&self, key: u64) -> Option<Uuid> {
        self.id_of.get(&key).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.key_of.len()
    }

    pub(crate) fn contains(&self, id: Uuid) -> bool {
        self.key_of.contains_key(&id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Uuid, u64)> + '_ {
        self.key_of.iter().map(|(&id, &key)| (id, key))
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.key_of.capacity() * 32 + self.id_of.capacity() * 32
    }

    /// `next_key`, count, then `count` × (key u64 LE, id 16 bytes).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.next_key.to_le_bytes());
        out.extend_from_slice(&(self.key_of.len() as u64).to_le_bytes());
        for (id, key) in self.iter() {
            out.extend_from_slice(&key.to_le_bytes());
            out.extend_from_slice(id.as_bytes());
        }
    }

    /// Decode from the front of `bytes`, returning the map and the rest.
    pub(crate) fn decode(bytes: &[u8]) -> Result<(KeyMap, &[u8]), String> {
        let mut r = Reader(bytes);
        let next_key = r.u64()?;
        let n = r.u64()? as usize;
        if n.checked_mul(24).is_none_or(|need| need > r.0.len()) {
            return Err(format!("key map claims {n} entries, more than the bytes hold"));
        }
        let mut map = KeyMap { next_key, ..KeyMap::default() };
        map.key_of.reserve(n);
        map.id_of.reserve(n);
        for _ in 0..n {
            let key = r.u64()?;
            let id = Uuid::from_bytes(r.take::<16>()?);
            if key >= next_key || map.id_of.insert(key, id).is_some() || map.key_of.insert(id, key).is_some()
            {
                return Err(format!("key map entry {key} for {id} is duplicated or out of range"));
            }
        }
        Ok((map, r.0))
    }
}

/// A cursor over snapshot bytes that fails instead of panicking on short input.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        if self.0.len() < N {
            return Err("snapshot payload is truncated".into());
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        self.take::<8>().map(u64::from_le_bytes)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("snapshot payload is truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_never_reused_and_round_trip() {
        let mut m = KeyMap::default();
        let a = Uuid::from_u128(1);
        let k1 = m.assign(a);
        m.remove(a);
        let k2 = m.assign(a);
        assert_ne!(k1, k2);
        m.assign(Uuid::from_u128(2));
        let mut buf = Vec::new();
        m.encode(&mut buf);
        buf.extend_from_slice(b"rest");
        let (back, rest) = KeyMap::decode(&buf).unwrap();
        assert_eq!(rest, b"rest");
        assert_eq!(back.key(a), Some(k2));
        assert_eq!(back.len(), 2);
        assert!(KeyMap::decode(&buf[..20]).is_err());
    }
}
