package tokenizer

// DefaultCorpus is the English text GenerateByteLevel learns merges from when
// given no corpus: short stories, dialogue, numbers, code and punctuation, so
// that common words, spaces, digits and symbols all get merged tokens.
const DefaultCorpus = `Once upon a time, in a small village near the river, there lived a little girl named Lily.
Lily loved to play outside in the park with her friend Tom. One day, they saw a big red ball under a tree.
"Look at the ball!" said Tom. "Can we play with it?" Lily smiled and said, "Yes, let's play together."
They played all afternoon, and when the sun went down, they walked home happy and tired.

The next morning, Lily's mother made pancakes with honey. "Thank you, Mom," Lily said. "They're very good."
Her mother laughed. "You're welcome. Don't forget your coat; it's cold today and the wind is strong."
Lily put on her blue coat and ran to school. On the way she met an old man with a small brown dog.
The dog wagged its tail, and the man told her a story about a ship that sailed across the sea in 1492.

Chapter 2. The Weather Report
On Monday the temperature was 21 degrees, on Tuesday it rose to 25, and by Friday it reached 31.
The report said: "Expect light rain in the north, sunny skies in the south, and wind speeds of 15 km/h."
Prices at the market went up by 3.5% this year; a loaf of bread now costs $2.49 and milk costs $1.19.

Questions and answers:
Q: What color was the ball?
A: The ball was red.
Q: Who did Lily meet on the way to school?
A: She met an old man and his dog.
Q: How many days are in a week?
A: There are 7 days in a week, and 52 weeks in a year.

In the city, people hurried along the streets. Cars and buses moved slowly through the traffic, and the
shops opened their doors at nine o'clock. A teacher explained to her students that reading every day helps
them learn new words, understand other people, and think about the world in different ways.
"I'm sure you'll see," she said, "that the more you read, the more you'll want to read."

def fibonacci(n):
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)

for i in range(10):
    print(i, fibonacci(i))

{"id": 17, "name": "example", "values": [1, 2, 3], "ok": true}

The scientists measured the distance between the two stars and found that it was much larger than they had
expected. They wrote a paper about the discovery, and other scientists around the world read it with great
interest. Some of them agreed with the results, while others asked for more data before they would believe it.

When the storm came, the children stayed inside. They built a castle out of blankets and pillows, and they
pretended that they were kings and queens of a faraway land. Their father brought them warm cocoa, and their
grandmother told them about the winter when the snow was so deep that nobody could open the front door.

Every evening the family sat together at the table. They talked about what they had done during the day,
what they had learned, and what they wanted to do tomorrow. Then they washed the dishes, read a few pages of
a book, and went to bed. It was a simple life, but it was a good one, and they were thankful for it.
`
