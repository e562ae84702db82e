package random

// corpus is the text the generated tokenizer's merges are learned from:
// simple English in the style of children's stories, written for this
// project, plus digits, punctuation and code so common pieces merge.
const corpus = `Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her dog, Max.
One day, Lily and her mom went to the park. The sun was shining and the birds were singing. Lily saw a big red ball
under a tree. "Can I play with the ball, Mom?" she asked. Her mom smiled and said, "Yes, you can, but be careful."
Lily kicked the ball and Max ran after it. They played all day long. When the sun went down, they went home happy.
Tom was a small boy who lived in a house near the river. Every morning he looked at the water and counted the boats.
"One, two, three," he said. His friend Sam came to visit. They built a boat out of wood and paper. The boat was
little, but it could float. They put it in the water and watched it go. "Look, it is going far away!" said Sam.
Tom laughed. Then it started to rain, so they ran inside and had warm milk and cookies with Grandma.
The cat sat on the mat. The dog slept by the door. The bird flew over the garden, where flowers grew in the spring.
In the summer the children swam in the lake; in the winter they made a snowman with a hat and a long orange nose.
Question: What color was the ball? Answer: The ball was red. Question: Who went to the park? Answer: Lily and her mom.
Q: Where did Tom live? A: In a house near the river. Q: What did they build? A: A boat. Q: Was it raining? A: yes
The numbers are 0 1 2 3 4 5 6 7 8 9 10 11 12 100 256 1024 2048 2024 3.14 and 42. Prices: $5, 10%, #1, a+b=c, x*y/z.
def add(a, b):
    return a + b

for i in range(10):
    print(i, add(i, 1))
The history of the city began long ago, when people first settled by the river and traded grain, salt and cloth.
Scientists study the stars, the oceans and the smallest living things. They ask questions, make tests and share
what they learn. Students read books, write stories and solve problems in mathematics, language and science.
She said that they would come back tomorrow, and they did. He thought about it for a long time before he answered.
It is important to remember that everyone makes mistakes. What matters is what you do after them.
`
